"""`recaption audit sample`: seeded, stratified, with the pairs people must see."""

import json

import pytest

from recaption.cli import main
from recaption.io import read_kept_pairs
from recaption.io.base import ReaderOptions
from recaption.record import Caption, Pair
from recaption.review.sample import SampleSettings, choose, disagreement
from tests.conftest import image_pairs


def pairs(n: int = 100) -> list[Pair]:
    out = []
    for i in range(n):
        pair = Pair(f"p{i}", None, texts=[f"alt {i}"])
        pair.captions = [Caption(f"a red car number {i}", "alt-text", scores={"clip_score": float(i)}, selected=True)]
        if i % 10 == 0:  # a captioner that says something else entirely
            pair.captions.append(Caption("two dogs in a park", "vlm:m", round=1, parent=0))
        out.append(pair)
    return out


def test_uniform_sample_is_seeded_and_of_the_rate():
    first, why = choose(pairs(), SampleSettings(rate=0.05, seed=1))
    assert len(first) == 5 and all(why[i]["reason"] == "uniform" for i in first)
    assert choose(pairs(), SampleSettings(rate=0.05, seed=1))[0] == first
    assert choose(pairs(), SampleSettings(rate=0.05, seed=2))[0] != first


def test_stratified_sample_covers_every_band_and_the_must_sees():
    chosen, why = choose(pairs(), SampleSettings(rate=0.1, mode="stratified", bands=5, lowest=3, disagreeing=2, seed=0))
    assert {0, 1, 2} <= set(chosen) and why[1]["reason"] == "lowest"  # scores 0, 1, 2 are the lowest
    assert {why[i]["reason"] for i in chosen} == {"lowest", "disagreeing", "stratified"}
    # the two most disagreeing are pairs 0 and 10; 0 is in already, as one of the lowest
    assert why[10]["reason"] == "disagreeing" and why[0]["reason"] == "lowest"
    bands = {why[i]["band"] for i in chosen if why[i]["reason"] == "stratified"}
    assert bands == {f"band {b} of 5" for b in range(1, 6)}  # low, middle and high scores all seen
    assert disagreement(pairs()[10]) == pytest.approx(1 - 1 / 9) and disagreement(pairs()[11]) == 0.0  # only "a" shared; one source


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="rate"):
        choose(pairs(), SampleSettings(rate=0))
    # A score no pair has would put every pair in an "unscored" band: refused, naming those there.
    with pytest.raises(ValueError, match="no pair has a score named 'nsfw'; the scores present are: clip_score"):
        choose(pairs(), SampleSettings(mode="stratified", by="nsfw"))
    with pytest.raises(ValueError, match="no pair has a score named 'nsfw'"):
        choose(pairs(), SampleSettings(by="nsfw", lowest=3))
    assert choose(pairs(), SampleSettings(by="nsfw"))[0]  # uniform draws need no score


def test_the_cli_writes_a_dataset_like_any_other(tmp_path, capsys):
    image_pairs(tmp_path, [[f"photo {i}"] for i in range(40)], scores=[{"clip_score": i} for i in range(40)])
    assert main(["audit", "sample", str(tmp_path / "pairs.jsonl"), str(tmp_path / "sample"), "--rate", "0.1", "--lowest", "1"]) == 0
    assert "sampled" in capsys.readouterr().out
    sampled, rejected = read_kept_pairs(tmp_path / "sample", None, ReaderOptions())
    summary = json.loads((tmp_path / "sample" / "sample.json").read_text())
    assert rejected == 0 and len(sampled) == summary["sampled"] == 5  # 4 drawn + the lowest, unless drawn already
    assert all(p.meta["audit"]["seed"] == 0 for p in sampled) and "img-0" in summary["image_ids"]
    assert all(open(p.image, "rb").read(2) == b"\xff\xd8" for p in sampled)  # the images are still found
    assert main(["audit", "sample", str(tmp_path / "pairs.jsonl"), str(tmp_path / "sample")]) == 2  # not over an earlier sample
