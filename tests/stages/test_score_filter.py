"""score_filter: any stored score, on the pair or the selected caption, in a range; a re-run
over a run's output decides again without making a score anew."""

import json

import pytest

from recaption.cli import main
from recaption.record import Caption, Pair
from recaption.stages.base import StageError
from recaption.stages.select import ScoreFilter
from tests.conftest import make_pairs_dataset


def pair(i, nsfw=None, clip=None):
    p = Pair(f"p{i}", None, texts=["t"])
    if nsfw is not None:
        p.scores["nsfw"] = nsfw
    p.captions.append(Caption("a caption", "alt-text", selected=True, scores={} if clip is None else {"clip_score": clip}))
    return p


def test_range_on_pair_and_selected_caption_scores():
    pairs = [pair(0, nsfw=0.1), pair(1, nsfw=0.9), pair(2)]
    ScoreFilter(score="nsfw", max=0.6)(pairs)
    assert [p.reject.key if p.reject else None for p in pairs] == [None, "score_filter/nsfw_above_max", "score_filter/not_scored"]
    pairs = [pair(0, clip=31.0), pair(1, clip=18.5), pair(2)]
    ScoreFilter(score="clip_score", min=20, on="selected", missing="keep")(pairs)
    assert [p.reject.key if p.reject else None for p in pairs] == [None, "score_filter/clip_score_below_min", None]
    assert "18.5 < 20" in pairs[1].reject.detail


@pytest.mark.parametrize("args", [{}, {"score": "nsfw"}, {"score": "nsfw", "min": 2, "max": 1}, {"score": "x", "max": 1, "on": "caption"}])
def test_settings_that_cannot_work_fail_when_built(args):
    with pytest.raises(StageError, match="score_filter"):
        ScoreFilter(**args)


def test_a_rerun_over_a_runs_output_filters_on_its_stored_scores(tmp_path):
    data = make_pairs_dataset(tmp_path / "in", 6)
    assert main(["run", str(data), str(tmp_path / "out"), "--no-progress", "--recipe", "clean"]) == 0
    recipe = tmp_path / "narrow.yaml"
    recipe.write_text("name: narrow\nstages:\n  - score_filter:\n      score: colourfulness\n      min: 1000\n      missing: reject\n")
    assert main(["run", str(tmp_path / "out" / "data"), str(tmp_path / "again"), "--no-progress", "--recipe", str(recipe)]) == 1  # nothing that colourful
    stats = json.loads((tmp_path / "again" / "stats.json").read_text())
    assert stats["rejects_by_reason"] == {"score_filter/colourfulness_below_min": stats["input"]}
