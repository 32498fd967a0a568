"""`recaption bench realign`: the whole benchmark at a small size, and its ordering checks."""

import json

import pytest

from recaption.bench.realign import COLUMNS, ROWS, ordering_checks
from recaption.cli import main

pytest.importorskip("transformers")
pytest.importorskip("pycocoevalcap")


def row(ref: float, names: float, clip: float = 80.0, wrong: float = 100.0) -> dict:
    return {"clip_score": clip, "bleu1": ref, "rouge_l": ref, "cider": 4 * ref, "np_f1": ref, "name_kept": names, "wrong_claim_dropped": wrong}


def test_the_papers_ordering_as_checks():
    holds = dict(zip(ROWS, [row(10, 100, 20, 0), row(70, 0), row(69, 0), row(95, 100)]))
    assert all(ordering_checks(holds).values())
    random_helps = {**holds, "captioner with random alt-text": row(80, 0)}
    assert ordering_checks(random_helps)["random alt-text no better than none"] is False
    no_names = {**holds, "captioner with alt-text": row(95, 0)}
    assert ordering_checks(no_names)["with alt-text keeps names"] is False


def test_a_small_world_end_to_end(tmp_path, capsys):
    out = tmp_path / "realign"
    code = main(["bench", "realign", str(out), "--train", "300", "--test", "30", "--clip-steps", "60", "--steps", "150", "--no-progress"])
    assert code in (0, 1)  # 1: the ordering does not hold yet at this size (see RESULTS.md for the full run)
    result = json.loads((out / "table.json").read_text())
    assert list(result["rows"]) == list(ROWS)
    for name in ROWS:
        assert set(result["rows"][name]) == set(COLUMNS) - set(result["missing"])
    alt, captioner = result["rows"]["alt-text"], result["rows"]["captioner with alt-text"]
    # Even this briefly trained, the captioner writes captions in the references' form, which
    # its CLIP prefers to the alt-texts' file names and dates.
    assert captioner["bleu1"] > alt["bleu1"] + 30 and captioner["clip_score"] > alt["clip_score"] + 10
    assert alt["name_kept"] == 100.0 and alt["wrong_claim_dropped"] == 0.0
    assert sum(1 for _ in open(out / "captions.jsonl")) == 30
    assert "| captioner with alt-text |" in capsys.readouterr().out
    assert main(["bench", "realign", str(out)]) == 2  # a folder with a run in it is not overwritten
    # The same seed and thread count give the same table, whatever else the machine does.
    again = tmp_path / "again"
    assert main(["bench", "realign", str(again), "--train", "300", "--test", "30", "--clip-steps", "60", "--steps", "150", "--no-progress"]) in (0, 1)
    assert json.loads((again / "table.json").read_text())["rows"] == result["rows"]
