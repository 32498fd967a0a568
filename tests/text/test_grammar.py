"""The caption writer's English: articles by the parser, never two media, occasion-only alt-text."""

import pytest

from recaption.models.person_names import load_parser
from recaption.text.alt_context import split_alt_texts
from recaption.text.grammar import article_for, own_medium, with_article


@pytest.fixture(scope="module")
def nlp():
    return load_parser()


@pytest.mark.parametrize("subject,expected", [
    ("astronaut in her orange flight suit", "an astronaut in her orange flight suit"),
    ("cameraman standing on a lawn with a tripod", "a cameraman standing on a lawn with a tripod"),
    ("red Ducati motorcycle in a garage", "a red Ducati motorcycle in a garage"),
    ("horse silhouette", "a horse silhouette"),
    ("umbrella on a beach", "an umbrella on a beach"),
    # left as they are: plural, mass, a determiner or number already there, a name alone
    ("Greek coins from Pompeii", "Greek coins from Pompeii"),
    ("gravel on the ground", "gravel on the ground"),
    ("outer space", "outer space"),
    ("immunohistochemical staining of colonic tissue", "immunohistochemical staining of colonic tissue"),
    ("the surface of the moon", "the surface of the moon"),
    ("two dogs in a park", "two dogs in a park"),
    ("my dog Max on the sofa", "my dog Max on the sofa"),
    ("Chelsea the tabby cat", "Chelsea the tabby cat"),
    ("Eiffel Tower at night", "Eiffel Tower at night"),
    # a capital that only opened the alt-text goes; a name's capitals stay
    ("Cup of coffee on a table", "a cup of coffee on a table"),
    ("Immunohistochemical staining of colon tissue", "immunohistochemical staining of colon tissue"),
    ("A dog on a beach", "a dog on a beach"),
    ("The Eiffel Tower", "the Eiffel Tower"),
    ("London at night", "London at night"),
    ("Golden Gate Bridge at dusk", "Golden Gate Bridge at dusk"),
])
def test_articles_before_singular_count_nouns_only(nlp, subject, expected):
    assert with_article(subject, nlp) == expected


def test_article_by_sound():
    assert [article_for(w) for w in ("apple", "unicorn", "hour", "X-ray", "US flag", "European car", "egg")] == ["an", "a", "an", "an", "a", "a", "an"]


def test_a_subject_that_names_its_medium_is_the_prompt():
    assert own_medium("Fundus photograph of a healthy human retina") == ("a fundus photograph of", "a healthy human retina")
    assert own_medium("microscope image of stained colon tissue") == ("a microscope image of", "stained colon tissue")
    assert own_medium("black silhouette of a running horse") == ("a black silhouette of", "a running horse")
    assert own_medium("X-ray image of a hand") == ("an X-ray image of", "a hand")
    assert own_medium("cup of coffee on a saucer") is None
    assert own_medium("pictures") is None


CONTEXT_ONLY = ["family photo", "holiday pics 2017", "beach day", "our trip", "famous", "Christmas 2018", "best day ever",
                "wedding photos", "road trip!!!", "my vacation"]
CONTENT = [("a dog at the beach on our trip", ["our trip"]), ("wedding cake on a table", []), ("red car", []),
           ("Eiffel Tower at night", []), ("kids playing in the snow on Christmas day", ["Christmas day"])]


def test_occasion_only_alt_text_is_context_not_content(nlp):
    for text, parts in zip(CONTEXT_ONLY, split_alt_texts(CONTEXT_ONLY, nlp)):
        assert not parts.names_content, text
    texts = [t for t, _ in CONTENT]
    for (text, context), parts in zip(CONTENT, split_alt_texts(texts, nlp)):
        assert parts.names_content and parts.context == context, (text, parts)
