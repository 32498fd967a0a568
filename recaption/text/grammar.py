"""English for the caption writer, decided by spaCy's parser rather than by more patterns.

- A singular count noun after the prompt gets its article: "a photo of astronaut in her
  flight suit" -> "a photo of an astronaut in her flight suit". Not where a determiner, a
  number or a possessive is there already, not for a plural or a mass noun ("coins",
  "gravel", "outer space", "staining"), and not for a name standing alone ("Chelsea the cat").
- A capital that only opens the alt-text goes after the prompt: "a photo of Cup of coffee"
  -> "a photo of a cup of coffee", "Immunohistochemical staining" -> "immunohistochemical
  staining"; a name keeps its capitals ("London at night", "Golden Gate Bridge", "NASA").
- A subject that names its own medium takes the prompt's place: never two media ("a photo of
  fundus photograph of a retina" -> "a fundus photograph of a retina").
"""

from __future__ import annotations

import re
from typing import Any

# Nouns that take no article: mass nouns common in alt-text.
MASS_NOUNS = frozenset(
    "space water snow grass gravel sand soil mud dirt sky food art music furniture traffic fog mist rain light darkness "
    "sunlight smoke fire ice hair skin fur wood metal glass paper plastic stone marble concrete text writing handwriting "
    "scenery nature wildlife foliage equipment clothing jewelry jewellery luggage machinery money bread rice milk tea "
    "coffee wine beer soup meat fruit weather sunset sunrise dusk dawn night daylight moonlight tissue graffiti signage "
    "lettering typography pottery architecture countryside lace silk cotton wool denim leather steel iron gold silver "
    "copper bronze brass rust moss lava foam".split()
)
MEDIUM_WORDS = (
    "photograph|photo|picture|image|scan|x-ray|radiograph|micrograph|drawing|painting|watercolou?r|illustration|sketch|rendering|"
    "screenshot|diagram|silhouette|poster"
)
# "fundus photograph of", "microscope image of", "black silhouette of": up to two words, then the medium.
_OWN_MEDIUM = re.compile(rf"(?i)^((?:[\w-]+\s+){{0,2}}?(?:{MEDIUM_WORDS}))\s+of\s+(?=\S)")
_ARTICLE_WORD = re.compile(r"(?i)^(?:a|an|the)\s+")
# Adjectives from names keep their capital ("Greek coins", "Italian food"); without NER, by
# the common endings of demonyms and a few irregular ones. A common adjective that ends alike
# ("Human", "Urban") keeps its capital too: the lesser fault.
_PROPER_ADJECTIVE = re.compile(
    r"(?i)(?:an|ese|ish|i)$|^(?:greek|french|dutch|thai|swiss|welsh|czech|roman|gothic|victorian|arabic|celtic|nordic|baltic)$"
)
_SPELLED = re.compile(r"^(?:[A-Z]{2,}\b|[A-Z](?:-|$))")  # an acronym, or a lone capital letter ("X-ray")


def article_for(phrase: str) -> str:
    """'a' or 'an' by the sound that starts ``phrase`` (the letter, with the common exceptions)."""
    word = phrase.split(maxsplit=1)[0] if phrase.split() else phrase
    if _SPELLED.match(word):  # read letter by letter: "an X-ray", "a US flag", "an MRI scan"
        return "an" if word[0] in "AEFHILMNORSX" else "a"
    lower = word.lower()
    if lower.startswith(("uni", "use", "usu", "eu", "one", "once")):
        return "a"
    if lower.startswith(("hour", "honest", "honor", "honour", "heir")):
        return "an"
    return "an" if lower[:1] in "aeiou" else "a"


def own_medium(subject: str) -> tuple[str, str] | None:
    """(prompt, rest) where the subject opens with its own medium ("Fundus photograph of a retina")."""
    m = _OWN_MEDIUM.match(_ARTICLE_WORD.sub("", subject))
    if not m:
        return None
    medium = m.group(1)
    if medium[:1].isupper() and not _SPELLED.match(medium):
        medium = medium[0].lower() + medium[1:]
    rest = _ARTICLE_WORD.sub("", subject)[m.end() :]
    return f"{article_for(medium)} {medium} of", rest


def _opening_capital_only(doc: Any) -> bool:
    """The first word is capitalised only because it opened the alt-text: a common word
    ("Cup", "Immunohistochemical") not followed by a name ("Golden Gate")."""
    first = doc[0]
    if first.tag_ == "DT" and first.text[:1].isupper() and first.text[1:].lower() == first.text[1:]:
        return True  # "A dog", "The Eiffel Tower"
    title = first.text[:1].isupper() and first.text[1:].islower()
    name_follows = len(doc) > 1 and doc[1].tag_ in ("NNP", "NNPS") and doc[1].text[:1].isupper()
    proper_adjective = first.tag_.startswith("JJ") and bool(_PROPER_ADJECTIVE.search(first.text))
    return title and first.tag_ not in ("NNP", "NNPS") and not name_follows and not proper_adjective


def with_article(subject: str, nlp: Any) -> str:
    """``subject`` in the caption's case, with "a"/"an" before it where it opens with a bare
    singular count noun."""
    if not subject.strip():
        return subject
    doc = nlp(subject)
    if _opening_capital_only(doc):
        subject = doc[0].text.lower() + subject[len(doc[0].text) :]
    chunk = next((c for c in doc.noun_chunks if c.start == 0), None)
    if chunk is None:
        return subject
    first, root = doc[0], chunk.root
    bare = first.pos_ not in ("DET", "NUM", "PRON") and first.tag_ not in ("PRP$", "WP$", "CD") and not any(t.dep_ == "poss" for t in chunk)
    # The small pipeline tags a fragment's lower-case nouns as proper ("umbrella on a beach"):
    # a name has a capital, so a lower-case "NNP" is read as the common noun it is.
    singular = root.tag_ == "NN" or (root.tag_ == "NNP" and root.text.islower())
    count_noun = singular and root.lower_ not in MASS_NOUNS and not root.lower_.endswith("ing")
    a_name = all(t.pos_ == "PROPN" and t.text[:1].isupper() for t in chunk)
    return f"{article_for(subject)} {subject}" if bare and count_noun and not a_name else subject
