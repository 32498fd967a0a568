"""Reference metrics against hand-computed values."""

import shutil

import pytest

from recaption.eval.reference_metrics import ReferenceMetrics, load_noun_chunker, noun_phrase_scores, tokenize

pytest.importorskip("pycocoevalcap")


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A Cat, on the MAT! (IMG_1.jpg)") == "a cat on the mat img 1 jpg"


def test_bleu1_and_rouge_match_hand_computed_values():
    metrics = ReferenceMetrics(meteor=False)
    scores = metrics.score({"x": "a cat on a mat", "y": "a dog in a park"}, {"x": ["a cat on the mat"], "y": ["a dog in a park"]})
    assert scores["bleu1"] == pytest.approx(90.0, abs=0.01)  # 9 of 10 unigrams match, lengths equal
    assert scores["rouge_l"] == pytest.approx(100 * (0.8 + 1.0) / 2, abs=0.01)  # LCS 4 of 5, and a perfect match
    assert "meteor" not in scores and scores["cider"] > 0


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_runs_the_bundled_jar_and_a_perfect_match_scores_100():
    metrics = ReferenceMetrics()
    try:
        perfect = metrics.score({"x": "a red car on a road"}, {"x": ["a red car on a road"]})
        partial = metrics.score({"x": "a blue boat"}, {"x": ["a red car on a road"]})
    finally:
        metrics.close()
    assert perfect["meteor"] == pytest.approx(100.0, abs=0.5) and partial["meteor"] < 30


def test_noun_phrase_precision_recall_f1():
    nlp = load_noun_chunker()
    scores = noun_phrase_scores({"x": "a red car near a tree"}, {"x": ["a red car on a road"]}, nlp)
    assert scores == pytest.approx({"np_precision": 50.0, "np_recall": 50.0, "np_f1": 50.0})
