import pytest

from recaption.text.clip_tokens import clip_tokenizer
from recaption.text.fit import fit_to_budget

LONG = (
    "SpaceX Falcon 9 rocket on the launch pad at Cape Canaveral before the Starlink mission. "
    "The fog hangs over the ocean in the morning light. "
    "Photographers wait at the fence with long lenses and tripods and coffee and snacks. "
    "Built by SpaceX in Hawthorne, California in 2019."
)


def test_short_text_is_untouched():
    count = clip_tokenizer().count
    assert fit_to_budget("a cat on a sofa", count, 77) == "a cat on a sofa"


@pytest.mark.parametrize("budget", [77, 40, 30])
def test_fitted_text_is_within_budget_keeps_first_sentence_and_whole_words(budget):
    count = clip_tokenizer().count
    out = fit_to_budget(LONG, count, budget)
    assert count(out) <= budget
    assert out.startswith("SpaceX Falcon 9 rocket on the launch pad")
    words = set(LONG.replace(".", " ").replace(",", " ").split())
    assert all(w.strip(".,") in words for w in out.split())


def test_concrete_sentences_are_preferred():
    count = clip_tokenizer().count
    out = fit_to_budget(LONG, count, 45)
    # The sentence with names and a year beats the longer generic one.
    assert "Hawthorne" in out
    assert "Photographers" not in out


def test_overlong_first_sentence_is_cut_at_clause_then_word():
    count = clip_tokenizer().count
    text = "A very long description, " + ", ".join(f"item{i} with details" for i in range(60))
    out = fit_to_budget(text, count, 20)
    assert count(out) <= 20
    assert out.startswith("A very long description")
    assert not out.endswith(",")


def test_chunks_cover_the_whole_text_and_each_fits():
    from recaption.text.fit import chunk_to_budget

    def count(t):
        return len(t.split()) + 2

    text = "One two three. Four five six seven eight nine ten eleven twelve. Thirteen."
    chunks = chunk_to_budget(text, count, 7)
    assert all(count(c) <= 7 for c in chunks)
    assert " ".join(chunks).split() == text.split()
    assert chunks[0] == "One two three."
    assert chunk_to_budget("short", count, 7) == ["short"]
