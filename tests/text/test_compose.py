"""The rule-based writer: exact output for fixed evidence."""

from dataclasses import replace

import pytest

from recaption.text.clip_tokens import clip_tokenizer
from recaption.text.compose import Evidence, Label, compose, tag_agreement

CAT = [Label("Egyptian Mau", "cat", 0.77), Label("tiger cat", "cat", 0.10)]
COFFEE = [Label("espresso", "espresso", 0.90, "", 967), Label("tea cup", "cup", 0.04, "", 968)]

CASES = [
    # (evidence, max_tags, expected caption)
    (Evidence("Chelsea the tabby cat lookin at you!", CAT, colourfulness=30), 1,
     "a photo of Chelsea the tabby cat lookin at you"),
    (Evidence("cup of coffee, latte art on a saucer & spoon", COFFEE, colourfulness=40), 1,
     "a photo of cup of coffee, latte art on a saucer & spoon"),  # coffee says espresso (WordNet)
    (Evidence("cameraman on a lawn with a tripod, black and white", [Label("tripod", "tripod", 0.6)], colourfulness=0.3), 1,
     "a black and white photo of cameraman on a lawn with a tripod"),
    (Evidence("", [Label("espresso", "espresso", 0.3), Label("coffee mug", "coffee mug", 0.25)], ["OPEN 24 HOURS"], 30, 0.9), 2,
     'a product photo of what may be an espresso, with the text "OPEN 24 HOURS"'),
    (Evidence("Photo of a red Bentley parked outside", [Label("convertible", "convertible", 0.5, "car"), Label("street sign", "street sign", 0.3)]), 2,
     "a photo of a red Bentley parked outside, possibly a street sign"),
    (Evidence("oil painting of a harbour at dusk"), 2, "a painting of a harbour at dusk"),
    (Evidence("macro shot of a bee on a flower"), 2, "a close-up photo of a bee on a flower"),
    (Evidence("Untitled image", [Label("drilling rig", "rig", 0.4)]), 2, "a photo of what may be a drilling rig"),
    (Evidence("a street sign", ocr=["STOP", "a street sign"]), 2, 'a photo of a street sign, with the text "STOP"'),
]


@pytest.mark.parametrize("ev,max_tags,expected", CASES)
def test_compose_is_exact_for_fixed_evidence(ev, max_tags, expected):
    assert compose(ev, clip_tokenizer().count, 77, max_tags=max_tags).text == expected


def test_alt_text_that_names_no_content_leaves_nothing_to_say():
    made = compose(Evidence("Image!"), clip_tokenizer().count, 77)
    assert (made.text, made.subject, made.says_anything) == ("a photo", "", False)


def test_no_repeats_and_no_two_labels_with_one_head_noun():
    ev = Evidence("two cats on a sofa", [Label("tabby cat", "cat", 0.6), Label("studio couch", "couch", 0.55), Label("sofa bed", "couch", 0.5)])
    made = compose(ev, clip_tokenizer().count, 77, max_tags=3)
    assert made.text == "a photo of two cats on a sofa, possibly a studio couch"
    assert made.hedged == ["a studio couch"] and made.tags == []


def test_an_alt_text_the_classifier_is_sure_is_wrong_is_set_aside_and_agreement_says_so():
    disagree = Evidence("a cat asleep on a rug", [Label("golden retriever", "dog", 0.8, "dog", 207)])
    agree = Evidence("a cat asleep on a rug", [Label("tabby cat", "cat", 0.7), Label("tiger cat", "cat", 0.2)])
    made = compose(disagree, clip_tokenizer().count, 77)
    assert (made.text, made.contradicted) == ("a photo of a dog, possibly a golden retriever", "a cat asleep on a rug")
    # Unsure, or sure of something the alt-text cannot be checked against: the alt-text stands.
    unsure = Evidence("a cat asleep on a rug", [Label("golden retriever", "dog", 0.5)])
    unknown = Evidence("a galaxy far away", [Label("golden retriever", "dog", 0.8)])
    unplaced = Evidence("a cat asleep on a rug", [Label("golden retriever", "dog", 0.8)])  # no class: cannot be checked
    assert compose(unplaced, clip_tokenizer().count, 77).text == "a photo of a cat asleep on a rug, with a golden retriever"
    assert compose(unsure, clip_tokenizer().count, 77).text == "a photo of a cat asleep on a rug, possibly a golden retriever"
    assert compose(unknown, clip_tokenizer().count, 77).text == "a photo of a galaxy far away, with a golden retriever"
    assert compose(agree, clip_tokenizer().count, 77).text == "a photo of a cat asleep on a rug"
    assert tag_agreement(disagree) == 0.0
    assert tag_agreement(agree) == 0.9


def test_a_label_of_a_kind_the_alt_text_names_in_other_words_is_not_added():
    count = clip_tokenizer().count
    puppy = Evidence("my puppy on the grass", [Label("Golden Retriever", "dog", 0.9, "dog"), Label("lawn mower", "mower", 0.7)])
    bentley = Evidence("a Bentley at the Ritz", [Label("sports car", "car", 0.9, "car"), Label("car wheel", "wheel", 0.8, "car")])
    assert compose(puppy, count, 77, max_tags=2).text == "a photo of my puppy on the grass, with a lawn mower"
    assert compose(bentley, count, 77, max_tags=2).text == "a photo of a Bentley at the Ritz"
    # The classifier agrees with the alt-text when it sees the kind the alt-text names.
    assert tag_agreement(bentley) == 1.0 and tag_agreement(puppy) == 0.9
    # Without the kind, "dog" and "car" are not said by these alt-texts: the labels are added.
    plain = Evidence("my puppy on the grass", [Label("Golden Retriever", "dog", 0.9)])
    assert compose(plain, count, 77).text == "a photo of my puppy on the grass, with a Golden Retriever"


def test_budget_drops_tags_and_text_before_the_alt_text():
    count = clip_tokenizer().count
    ev = Evidence("a red Bentley Continental GT parked in front of the Ritz hotel in London at night",
                  [Label("sports car", "car", 0.9), Label("limousine", "limousine", 0.6)], ["RITZ", "LONDON W1"])
    full = compose(ev, count, 200, max_tags=2).text
    short = compose(ev, count, 30, max_tags=2).text
    assert count(short) <= 30 < count(full)
    assert short == "a photo of a red Bentley Continental GT parked in front of the Ritz hotel in London at night"


def test_the_medium_comes_from_the_image_where_the_alt_text_says_none():
    count = clip_tokenizer().count
    page = Evidence("", [Label("pill bottle", "bottle", 0.6)], ["Region-based segmentation"], colourfulness=0.0, white_border=0.1, text_area_share=0.46)
    made = compose(page, count, 77)
    # A grey image mostly covered by text is a scanned page, and objects "seen" in it are not said.
    assert made.text == 'a scan of a page, with the text "Region-based segmentation"' and made.tags == []
    logo = Evidence("", [Label("plectrum", "plectrum", 0.33)], colourfulness=100.0, white_border=0.67, flat_share=0.49)
    assert compose(logo, count, 77).text == "an illustration of what may be a plectrum"
    # A photo: flat sky or not, under the graphic threshold; people are never a graphic.
    sky = Evidence("a rocket on the launch pad", colourfulness=37.0, white_border=0.0, flat_share=0.2)
    assert compose(sky, count, 77).text == "a photo of a rocket on the launch pad"
    poster = Evidence("", colourfulness=80.0, white_border=0.5, flat_share=0.6, faces=2)
    assert compose(poster, count, 77).text == "a photo of two people"
    # The image's medium is not said twice, and what the alt-text says above a class says it.
    scanned = replace(page, alt_text="scanned book page", ocr=[])
    assert compose(scanned, count, 77).text == "a scan of book page"
    coffee = Evidence("a cup of coffee on a saucer", [Label("espresso", "espresso", 0.9, "", 967)], colourfulness=40.0)
    assert compose(coffee, count, 77).text == "a photo of a cup of coffee on a saucer"
    # The alt-text's own word for the medium still wins.
    assert compose(replace(logo, alt_text="watercolour of a harbour"), count, 77).text.startswith("a watercolour of a harbour")
