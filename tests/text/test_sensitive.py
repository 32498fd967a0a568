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


def _entities(text, *spans):
    """Entities as a named-entity model would give them: (substring, label) in order."""
    from recaption.models.person_names import Entity

    found, at = [], 0
    for sub, label in spans:
        start = text.index(sub, at)
        found.append(Entity(start, start + len(sub), label))
        at = start + len(sub)
    return found


NAME_CASES = [
    # (text, entities, expected text, names reported)
    ("John Smith playing guitar", [("John Smith", "PERSON")], "a person playing guitar", ["john smith"]),
    ("wedding of Sarah and James, June 2019", [("Sarah", "PERSON"), ("James", "PERSON"), ("June 2019", "DATE")],
     "wedding of two people, June 2019", ["sarah", "james"]),
    ("portrait of Dr. Jane Goodall", [("Jane Goodall", "PERSON")], "portrait of a person", ["jane goodall"]),
    ("the astronaut Eileen Collins in uniform", [("Eileen Collins", "PERSON")], "the astronaut in uniform", ["eileen collins"]),
    ("the actor, Tom Hanks, at the premiere", [("Tom Hanks", "PERSON")], "the actor at the premiere", ["tom hanks"]),
    ("Tom Hanks's house", [("Tom Hanks's", "PERSON")], "a person's house", ["tom hanks"]),
    ("Jane's new car", [("Jane", "PERSON")], "a person's new car", ["jane"]),
    ("a painting of a harbour by Claude Monet", [("Claude Monet", "PERSON")], "a painting of a harbour", ["claude monet"]),
    # kept: names that are plainly not a person's
    ("my dog Max on the sofa", [("Max", "PERSON")], "my dog Max on the sofa", []),
    ("a horse named Secretariat", [("Secretariat", "PERSON")], "a horse named Secretariat", []),
    ("Max, our golden retriever, at the beach", [("Max", "PERSON")], "Max, our golden retriever, at the beach", []),
    ("the Mona Lisa", [("Mona Lisa", "PERSON")], "the Mona Lisa", []),
    ("Ford Mustang GT", [("Ford", "ORG"), ("Mustang GT", "PERSON")], "Ford Mustang GT", []),
    # places and facilities the model takes for people
    ("Launch Complex 40 has hosted the rocket", [("Launch Complex 40", "PERSON")], "Launch Complex 40 has hosted the rocket", []),
    ("Abbey Road crossing in London", [("Abbey Road", "PERSON"), ("London", "GPE")], "Abbey Road crossing in London", []),
    # text quoted from the image is never edited by the name rule
    ('a photo of coins, with the text "markers=np.zeros like(coins)"', [("markers=np.zeros", "PERSON")],
     'a photo of coins, with the text "markers=np.zeros like(coins)"', []),
    ('a poster of John Smith, with the text "John Smith for mayor"', [("John Smith", "PERSON"), ("John Smith", "PERSON")],
     'a poster of a person, with the text "John Smith for mayor"', ["john smith"]),
]


@pytest.mark.parametrize("text,spans,expected,names", NAME_CASES)
def test_person_names_policy(text, spans, expected, names):
    result = SensitiveAttributeFilter().check(text, _entities(text, *spans))
    assert result.text == expected
    assert result.removed.get("names", []) == names


def test_a_removed_name_leaves_a_person_whose_attributes_are_removed_too():
    text = "a smiling Emma Watson at the premiere"
    result = SensitiveAttributeFilter().check(text, _entities(text, ("Emma Watson", "PERSON")))
    assert result.text == "a person at the premiere"
    assert result.removed == {"names": ["emma watson"], "emotion": ["smiling"]}
