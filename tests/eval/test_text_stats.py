"""Text statistics: self-BLEU equal to pycocoevalcap's, distinct-n and the boilerplate rate by hand."""

import contextlib
import io

import pytest

from recaption.eval.text_stats import BOILERPLATE, distinct_n, self_bleu, text_stats
from recaption.text.clip_tokens import clip_tokenizer
from recaption.text.sensitive import SensitiveAttributeFilter

TEXTS = [
    "a photo of a red car on a road", "a photo of a red car near a tree", "two dogs running in a park",
    "a cup of coffee on a wooden table", "a photo of a cat", "a photo of a cat", "the image shows a horse in a field",
]


def test_self_bleu_equals_pycocoevalcap_with_each_caption_against_all_others():
    from pycocoevalcap.bleu.bleu import Bleu

    res = {i: [t] for i, t in enumerate(TEXTS)}
    gts = {i: TEXTS[:i] + TEXTS[i + 1 :] for i in range(len(TEXTS))}
    with contextlib.redirect_stdout(io.StringIO()):
        expected, _ = Bleu(4).compute_score(gts, res)
    assert self_bleu(TEXTS) == pytest.approx(100 * expected[3])


def test_distinct_n_and_boilerplate_by_hand():
    assert distinct_n([["a", "cat"], ["a", "dog"]], 1) == pytest.approx(100 * 3 / 4)
    assert distinct_n([["a", "cat"], ["a", "cat"]], 2) == pytest.approx(50.0)
    assert BOILERPLATE.search("The image shows a horse") and BOILERPLATE.search("In this picture, we can see a dog")
    assert not BOILERPLATE.search("a photo of an image of a horse")


def test_text_stats_of_a_source():
    stats = text_stats(TEXTS + ["a photo of an asian woman"], clip_tokenizer().count, SensitiveAttributeFilter())
    assert stats["boilerplate"] == pytest.approx(100 / 8) and stats["sensitive"] == pytest.approx(100 / 8)
    assert stats["clip_tokens"] == pytest.approx(sum(clip_tokenizer().count(t) for t in TEXTS + ["a photo of an asian woman"]) / 8)
