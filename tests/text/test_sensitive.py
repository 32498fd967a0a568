import pytest

from recaption.text.sensitive import SensitiveAttributeFilter

CASES = [
    # planted sensitive words -> what must remain, and the categories reported
    ("a smiling young Asian woman with long blonde hair holding a black cat",
     "a young woman with long hair holding a black cat", {"emotion", "race_ethnicity", "hair_colour"}),
    ("an angry man in a white shirt", "a man in a white shirt", {"emotion"}),
    ("A blonde walking her dog", "A person walking her dog", {"hair_colour"}),
    ("a woman who looks sad sitting on a bench", "a woman sitting on a bench", {"emotion"}),
    ("a gay couple laughing at the camera in a park", "a couple in a park", {"sexual_orientation", "emotion"}),
    ("portrait of a pregnant woman with dark skin", "portrait of a woman", {"health", "skin"}),
    ("two Muslim men at a market", "two men at a market", {"religion"}),
    ("a liberal student at a rally", "a student at a rally", {"politics"}),
    ("a happy, smiling couple", "a couple", {"emotion"}),
    ("an old black man and a white dog", "an old man and a white dog", {"race_ethnicity"}),
    ("a man at a desk, call +1 555-123-4567", "a man at a desk, call", {"contact_details"}),
    ("a man with gray hair reading", "a man reading", {"hair_colour"}),
    ("an old man has a white beard", "an old man has a beard", {"hair_colour"}),
]


@pytest.mark.parametrize("text,expected,categories", CASES)
def test_planted_sensitive_words_are_removed_and_reported(text, expected, categories):
    result = SensitiveAttributeFilter().check(text)
    assert result.text == expected
    assert set(result.removed) == categories


@pytest.mark.parametrize(
    "text",
    [
        "a happy meal on a table",
        "a black and white photo of a dog",
        "a black dog and a man",
        "a black car model",
        "Black Lives Matter protest with a crowd of people",
        "a white house with a red door",
        "a Bentley parked outside the Ritz",
    ],
)
def test_colours_and_moods_that_do_not_describe_people_stay(text):
    result = SensitiveAttributeFilter().check(text)
    assert result.text == text and not result.changed
