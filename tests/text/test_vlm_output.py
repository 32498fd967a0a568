import pytest

from recaption.text.prompts import TEMPLATES, check_template, render, template_fields
from recaption.text.vlm_output import tidy_generated

CASES = [
    ("The image shows a cat sitting on a sofa. The cat is", "", "a photo of a cat sitting on a sofa."),
    ("ASSISTANT: In this image, we can see a red car parked. USER: tell me more", "", "a photo of a red car parked."),
    ("a dog on a beach<|im_end|>", "", "a dog on a beach"),
    ("This picture depicts two dogs", "", "a photo of two dogs"),
    ("Question: what is shown? Answer: a horse in a field", "Question: what is shown? Answer:", "a horse in a field"),
    ("[/INST] There is a man riding a horse.", "", "a photo of a man riding a horse."),
    ("a cup of coffee on a saucer", "", "a cup of coffee on a saucer"),  # nothing to tidy
]


@pytest.mark.parametrize("raw,prompt,expected", CASES)
def test_tidy_removes_echo_artefacts_and_openings(raw, prompt, expected):
    assert tidy_generated(raw, prompt) == expected


def test_realign_template_carries_the_evidence():
    text = render(TEMPLATES["realign"], "a red Bentley at the Ritz", ["RITZ"], ["sports car"])
    assert '"a red Bentley at the Ritz"' in text and '"RITZ"' in text and "sports car" in text
    assert "none" in render(TEMPLATES["realign"])
    assert template_fields(TEMPLATES["realign"]) == {"alt_text", "ocr", "tags"}
    with pytest.raises(ValueError, match="unknown prompt field"):
        check_template("Describe {image} please")
