import pytest

from recaption.record import Caption, Pair
from recaption.stages.base import StageError
from recaption.stages.caption import ComposeCaption
from recaption.stages.text import CleanText, SensitiveCheck


def tagged_pair(alt: str, labels: list[tuple[str, str, float]], ocr: list[str] = (), keep_empty: bool = False) -> Pair:
    pair = Pair("p", None, texts=[alt], scores={"colourfulness": 30.0, "white_border": 0.0})
    pair.meta["tags"] = {
        "classify": {"model": "efficientnet-lite0:x", "value": [{"label": n, "noun": h, "p": p} for n, h, p in labels]},
        "ocr": {"model": "rapidocr:y", "value": [{"text": t, "confidence": 0.9, "box": []} for t in ocr]},
    }
    CleanText(keep_empty=keep_empty)([pair])
    return pair


def test_compose_writes_short_and_long_rules_captions_and_selects_short():
    pair = tagged_pair("IMG_0042.JPG cup of coffee on a saucer", [("espresso", "espresso", 0.9), ("dining table", "table", 0.3)], ["CAFE"])
    ComposeCaption()([pair])
    alt, short, long = pair.captions
    assert (short.source, short.params["variant"], short.selected) == ("rules", "short", True)
    assert (long.params["variant"], long.selected, alt.selected) == ("long", False, False)
    assert short.text == 'a photo of a cup of coffee on a saucer, with an espresso, with the text "CAFE"'
    assert long.text == 'a photo of a cup of coffee on a saucer, with an espresso, possibly a dining table, with the text "CAFE"'
    assert short.parent == 0 and short.round == 1
    assert short.model_hash == "efficientnet-lite0:x;rapidocr:y"
    assert pair.scores["tag_agreement"] == 0.0


@pytest.mark.parametrize("alt,labels,expected,context", [
    # an occasion is context, not the subject: the labels say what the photo shows
    ("holiday pics 2017", [("zebra", "zebra", 0.8)], "a photo of a zebra", ["holiday pictures"]),  # "pics" fixed by the slang rule
    ("family photo", [("espresso", "espresso", 0.7)], "a photo of an espresso", ["family photo"]),
    # content with context around it keeps its content
    ("a dog at the beach on our trip", [], "a photo of a dog at the beach on our trip", ["our trip"]),
    # the alt-text's own medium is the prompt: never two media
    ("Fundus photograph of a healthy human retina", [], "a fundus photograph of a healthy human retina", None),
    # an article before a bare singular count noun
    ("astronaut with short hair", [], "a photo of an astronaut with short hair", None),
])
def test_exact_captions_for_fixed_evidence(alt, labels, expected, context):
    pair = tagged_pair(alt, labels)
    ComposeCaption(variants=["short"])([pair])
    assert [c.text for c in pair.captions if c.selected] == [expected]
    assert pair.meta.get("alt_context") == context


@pytest.mark.parametrize("faces,labels,expected", [
    (1, [], "a photo of a person"),
    (2, [("tennis ball", "ball", 0.7)], "a photo of two people, with a tennis ball"),
    (14, [], "a photo of a group of people"),
])
def test_people_are_counted_where_the_alt_text_says_nothing(faces, labels, expected):
    pair = tagged_pair("IMG_0042.JPG", labels, keep_empty=True)
    pair.scores["faces"] = faces
    ComposeCaption(variants=["short"])([pair])
    assert [c.text for c in pair.captions if c.selected] == [expected]


def test_an_occasion_with_nothing_seen_is_no_evidence():
    pair = tagged_pair("beach day", [("sandbar", "sandbar", 0.1)])
    ComposeCaption()([pair])
    assert pair.reject.key == "compose_caption/no_evidence" and "'beach day'" in pair.reject.detail
    symbol = tagged_pair("IMG_0001.JPG", [], ocr=["®"], keep_empty=True)  # OCR read a symbol on a blank image: no text
    ComposeCaption()([symbol])
    assert symbol.reject.key == "compose_caption/no_evidence"


def test_sensitive_check_cleans_the_rules_caption_too():
    pair = tagged_pair("a smiling woman holding a cup", [("tea cup", "cup", 0.7)])
    ComposeCaption(variants=["short"])([pair])
    SensitiveCheck()([pair])
    selected = [c for c in pair.captions if c.selected]
    assert [c.text for c in selected] == ["a photo of a woman holding a cup"]
    assert selected[0].source == "rules"


def test_nothing_to_write_from_is_a_reject_unless_a_captioner_follows_and_bad_settings_fail_early():
    pair = Pair("p", None, texts=[])
    ComposeCaption()([pair])
    assert pair.captions == [] and pair.reject.key == "compose_caption/no_evidence"
    kept = Pair("p", None, texts=[])
    ComposeCaption(no_evidence="keep")([kept])  # a captioning model comes next
    assert kept.captions == [] and kept.reject is None
    vacuous = Pair("p", None, texts=["Image!"], captions=[Caption("Image!", "alt-text", selected=True)])  # as an earlier run left it
    ComposeCaption()([vacuous])  # "a photo" alone says nothing, and "Image!" is never the training caption
    assert [(c.source, c.selected) for c in vacuous.captions] == [("alt-text", False)]
    assert vacuous.reject.key == "compose_caption/no_evidence"
    with pytest.raises(StageError, match="no_evidence"):
        ComposeCaption(no_evidence="drop")
    with pytest.raises(StageError, match="select"):
        ComposeCaption(variants=["long"], select="short")
    with pytest.raises(StageError, match="hedge_min"):
        ComposeCaption(confident=0.3, hedge_min=0.5)


def test_the_default_recipe_captions_real_photos_whose_alt_text_says_nothing(tmp_path):
    """File names, dates, credits: the taggers look at the photo and the caption says what they saw."""
    import json

    from recaption.cli import main
    from tests.conftest import photo

    useless = {"chelsea": "IMG_0042.JPG", "coffee": "DSC_0001 2018-07-04", "rocket": "Photographed by J. Smith (c) 2019"}
    with open(tmp_path / "pairs.jsonl", "w") as fh:
        for name, alt in useless.items():
            photo(name).save(tmp_path / f"{name}.jpg", quality=92)
            fh.write(json.dumps({"image_id": name, "image_path": f"{name}.jpg", "texts": [alt]}) + "\n")
    assert main(["run", str(tmp_path / "pairs.jsonl"), str(tmp_path / "out"), "--workers", "1", "--no-progress"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert not any(key.startswith("clean_text/") for key in stats["rejects_by_reason"]), stats["rejects_by_reason"]
    kept = {json.loads(line)["image_id"]: json.loads(line) for line in open(tmp_path / "out" / "data" / "part-00000.jsonl")}
    assert set(kept) == set(useless)
    for name, record in kept.items():
        caption = record["caption"]
        labels = [t["label"] for t in record["meta"]["tags"]["classify"]["value"]]
        assert caption.startswith("a photo of") and any(label in caption for label in labels), (name, caption, labels)
        for junk in ("IMG", "DSC", "2018", "Smith", "2019"):
            assert junk not in caption, (name, caption)
        assert record["meta"]["cleaning"]["nothing_left"][0]["cleaned_by"]  # what the rules removed, on record
