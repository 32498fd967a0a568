import pytest

from recaption.record import Pair
from recaption.stages.base import StageError
from recaption.stages.caption import ComposeCaption
from recaption.stages.text import CleanText, SensitiveCheck


def tagged_pair(alt: str, labels: list[tuple[str, str, float]], ocr: list[str] = ()) -> Pair:
    pair = Pair("p", None, texts=[alt], scores={"colourfulness": 30.0, "white_border": 0.0})
    pair.meta["tags"] = {
        "classify": {"model": "efficientnet-lite0:x", "value": [{"label": n, "noun": h, "class": 0, "p": p} for n, h, p in labels]},
        "ocr": {"model": "rapidocr:y", "value": [{"text": t, "confidence": 0.9, "box": []} for t in ocr]},
    }
    CleanText()([pair])
    return pair


def test_compose_writes_short_and_long_rules_captions_and_selects_short():
    pair = tagged_pair("IMG_0042.JPG cup of coffee on a saucer", [("espresso", "espresso", 0.9), ("dining table", "table", 0.3)], ["CAFE"])
    ComposeCaption()([pair])
    alt, short, long = pair.captions
    assert (short.source, short.params["variant"], short.selected) == ("rules", "short", True)
    assert (long.params["variant"], long.selected, alt.selected) == ("long", False, False)
    assert short.text == 'a photo of cup of coffee on a saucer, with an espresso, with the text "CAFE"'
    assert long.text == 'a photo of cup of coffee on a saucer, with an espresso, possibly a dining table, with the text "CAFE"'
    assert short.parent == 0 and short.round == 1
    assert short.model_hash == "efficientnet-lite0:x;rapidocr:y"
    assert pair.scores["tag_agreement"] == 0.0


def test_sensitive_check_cleans_the_rules_caption_too():
    pair = tagged_pair("a smiling woman holding a cup", [("tea cup", "cup", 0.7)])
    ComposeCaption(variants=["short"])([pair])
    SensitiveCheck()([pair])
    selected = [c for c in pair.captions if c.selected]
    assert [c.text for c in selected] == ["a photo of a woman holding a cup"]
    assert selected[0].source == "rules"


def test_nothing_to_write_from_leaves_the_pair_alone_and_bad_settings_fail_early():
    pair = Pair("p", None, texts=[])
    ComposeCaption()([pair])
    assert pair.captions == [] and pair.reject is None
    vacuous = tagged_pair("Image!", [])
    ComposeCaption()([vacuous])  # "a photo" alone says nothing: no rules caption, the alt-text stays selected
    assert [(c.source, c.selected) for c in vacuous.captions] == [("alt-text", True)]
    with pytest.raises(StageError, match="select"):
        ComposeCaption(variants=["long"], select="short")
    with pytest.raises(StageError, match="hedge_min"):
        ComposeCaption(confident=0.3, hedge_min=0.5)
