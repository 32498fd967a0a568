"""Remove sensitive attributes of people and identifying details from a caption.

The annotation guideline (ARCHITECTURE.md) forbids describing a person's race or ethnicity, skin
or hair colour, health, religion, politics, sexual orientation, facial expression or
emotion, and any identifying information. Captions from every source (alt-text, rules,
VLMs, humans) pass through ``SensitiveAttributeFilter``, which removes such words where
they describe a person and reports what it removed, by category.

Colour and mood words are only removed where they describe a person ("a smiling woman",
"an Asian man", "with blonde hair"); "a black cat", "a white house" and "a happy meal" are
untouched.

People's names come from a named-entity model (``recaption.models.person_names``) and are replaced
by what the guideline allows: "a person", "two people" for a pair, or nothing after a role
("the astronaut Eileen Collins" -> "the astronaut") or "by" ("a painting by Monet" -> "a
painting"); a title goes with the name ("Dr."). The
model also calls pets, artworks and car models PERSON, so a name is kept where it is plainly
not a person's: after an animal word ("my dog Max", "a horse named Secretariat"), before one
("Chelsea the cat"), after "the" ("the Mona Lisa"), or straight after another entity ("Ford
Mustang GT"), and a "name" with a place word or a number in it is a place ("Abbey Road",
"Launch Complex 40"). Text in double quotes is quoted from the image (OCR) and is never
edited for names. Fictional characters ("Mickey Mouse") are names to the model and are removed.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from recaption.text.clean import remove_contacts, remove_urls
from recaption.text.kinds import KIND_WORDS

PERSON_NOUN_WORDS = (
    r"man|men|woman|women|boy|boys|girl|girls|person|people|persons|child|children|kid|kids|guy|guys|"
    r"lady|ladies|gentleman|gentlemen|baby|babies|toddler|teen|teens|teenager|teenagers|adult|adults|"
    r"player|players|student|students|worker|workers|couple|family|families|mother|father|mom|dad|"
    r"son|daughter|brother|sister|grandmother|grandfather|wife|husband|bride|groom|athlete|athletes|"
    r"doctor|nurse|soldier|soldiers|tourist|tourists|crowd|individual|individuals"
)
PERSON_NOUNS = f"(?:{PERSON_NOUN_WORDS})"

# Adjectives by category, removed where they stand before a person noun.
ADJECTIVES: dict[str, str] = {
    "race_ethnicity": (
        r"asian|black|white|caucasian|hispanic|latino|latina|latinx|african|african[- ]american|arab|arabic|"
        r"middle[- ]eastern|native[- ]american|indigenous|european|ethnic|mixed[- ]race|biracial"
    ),
    "skin": r"dark[- ]skinned|light[- ]skinned|fair[- ]skinned|pale[- ]skinned|olive[- ]skinned|tanned|swarthy",
    "hair_colour": (
        r"blonde?|brunette|redheaded|red[- ]haired|ginger|dark[- ]haired|fair[- ]haired|gr[ae]y[- ]haired|"
        r"white[- ]haired|black[- ]haired|brown[- ]haired|silver[- ]haired"
    ),
    "religion": r"muslim|christian|jewish|hindu|buddhist|sikh|catholic|protestant|orthodox|religious|atheist",
    "politics": r"liberal|conservative|democrat|democratic|republican|leftist|right[- ]wing|left[- ]wing|progressive",
    "sexual_orientation": r"gay|lesbian|bisexual|queer|homosexual|heterosexual|transgender|trans",
    "health": (
        r"disabled|handicapped|sick|ill|obese|overweight|fat|skinny|anorexic|blind|deaf|autistic|"
        r"diabetic|pregnant|injured|wounded|paralyzed|paralysed|mentally[- ]ill"
    ),
    "emotion": (
        r"happy|sad|angry|smiling|laughing|crying|frowning|grinning|worried|excited|surprised|scared|"
        r"frightened|upset|cheerful|joyful|joyous|serious|pensive|thoughtful|depressed|anxious|nervous|"
        r"proud|confident|shy|bored|tired|lonely|delighted|furious|sorrowful|gloomy|playful|"
        r"friendly|pretty|beautiful|handsome|ugly|attractive|sexy|cute"
    ),
}
# Nouns that name a person by a sensitive trait; replaced by a neutral noun.
TRAIT_NOUNS: dict[str, tuple[str, str]] = {
    "blonde": ("hair_colour", "person"),
    "blond": ("hair_colour", "person"),
    "brunette": ("hair_colour", "person"),
    "redhead": ("hair_colour", "person"),
}
EMOTION_WORDS = ADJECTIVES["emotion"]
HAIR_COLOURS = r"blonde?|brown|black|red|ginger|auburn|gr[ae]y|white|silver|dark|light|fair|golden|platinum|dyed \w+"
SKIN_WORDS = r"dark|pale|fair|light|brown|black|white|olive|tanned|tan"

# Words that may stand between a sensitive adjective and the person it describes ("a smiling
# young Asian woman"). Only these: "a black dog and a man" must keep its black dog.
_BETWEEN = r"(?:young|old|older|elderly|middle[- ]aged|little|small|tall|short|teenage|adult|two|three|four|five|" \
    r"several|many|few|\d+|" + "|".join(ADJECTIVES.values()) + ")"
# At most six words between: an unbounded chain made "black " * 6000 quadratic.
_ADJ = {
    cat: re.compile(rf"(?i)\b({words})\b(?=(?:[\s,]+(?:and\s+)?{_BETWEEN}\b){{0,6}}[\s,]+{PERSON_NOUNS}\b)")
    for cat, words in ADJECTIVES.items()
}
_TRAIT_NOUN = re.compile(r"(?i)(?:\b(a|an|the)\s+)?\b(" + "|".join(TRAIT_NOUNS) + r")\b(?!\s+(?:hair|woman|man|girl|boy|person|lady))")
_HAIR = re.compile(
    rf"(?i)((?<!\s)\s*\b(?:with|has|having)\s+)?\b((?:long|short|curly|straight|wavy|thick|thin)\s+)?(?:{HAIR_COLOURS})"
    rf"(\s+(?:long|short|curly|straight|wavy))?\s+(hair|beard|moustache|mustache)\b"
)
_SKIN = re.compile(rf"(?i)(?<!\s)\s*\b(?:with|has|having)\s+(?:(?:very|quite)\s+)?(?:{SKIN_WORDS})\s+(?:skin|complexion)\b")
_EMOTION_PHRASE = re.compile(
    rf"(?i)(?<!\s)\s*(?:,\s*)?\b(?:(?:who|that)\s+(?:is|are|looks|look|seems|seem|appears|appear)\s+|(?:looking|appearing|seeming|feeling)\s+)"
    rf"(?:very\s+|quite\s+|so\s+|rather\s+)?(?:{EMOTION_WORDS})\b"
)
_EMOTION_VERB = re.compile(
    r"(?i)(?<!\s)\s*\b(?:is\s+|are\s+)?(?:smiling|laughing|crying|frowning|grinning|sobbing|weeping|pouting|scowling)"
    r"(?:\s+(?:happily|broadly|widely|sadly|at\s+the\s+camera|at\s+the\s+viewer|at\s+each\s+other))?\b"
)
_ARTICLE = re.compile(r"(?i)\b(a|an)(\s+)(\w)")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_DOUBLE_COMMA = re.compile(r",\s*,")
_ARTICLE_COMMA = re.compile(r"(?i)\b(a|an|the)\s*,\s*")  # "a happy, smiling couple" minus both


# Names of pets follow or precede these ("my dog Max", "Chelsea the cat").
ANIMAL_WORDS = " ".join([KIND_WORDS["dog"], KIND_WORDS["cat"], KIND_WORDS["bird"]]) + (
    " horse horses pony foal mare stallion rabbit bunny hamster gerbil guinea pig pet pets cow calf goat pig piglet "
    "sheep lamb tortoise turtle snake lizard iguana fish goldfish ferret donkey alpaca llama"
)
_ANIMAL = "|".join(sorted(set(ANIMAL_WORDS.split()), key=len, reverse=True))
ROLE_NOUNS = PERSON_NOUN_WORDS + (
    "|actor|actress|singer|artist|author|writer|painter|poet|musician|rapper|model|photographer|designer|chef|"
    "president|senator|minister|governor|mayor|king|queen|prince|princess|pope|ceo|founder|coach|astronaut|pilot|"
    "officer|dancer|comedian|host|presenter|director|star|captain|champion|legend|icon|friend|wife|husband|partner"
)
HONORIFICS = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lord|Lady|Rev|Fr|Capt|Sgt|Gen|Col)\.?"
_PET_BEFORE = re.compile(rf"(?i)\b(?:{_ANIMAL})\s*,?\s+(?:(?:named|called)\s+)?$")
_PET_AFTER = re.compile(rf"(?i)^,?\s+(?:the|my|our|a|his|her|their)\s+(?:\w+\s+)?(?:{_ANIMAL})\b")
_THE_BEFORE = re.compile(r"(?i)\bthe\s+$")
_HONORIFIC_BEFORE = re.compile(rf"\b{HONORIFICS}\s+$")
_ROLE_BEFORE = re.compile(rf"(?i)\b(?:{ROLE_NOUNS})(\s*,)?\s+$")
_BY_BEFORE = re.compile(r"(?i)[\s,]*\bby\s+$")
_POSSESSIVE = re.compile(r"^(?:'s|’s|'|’)(?=\W|$)")
# "a smiling John" -> "a smiling person": an article then up to three words and no preposition.
_ARTICLE_AND_WORDS = re.compile(
    r"(?i)\b(?:a|an|the)\s+(?!(?:[a-z-]+\s+){0,2}(?:of|with|and|by|for|at|in|on|from|to|featuring|as|or|near)\b)"
    r"(?:[a-z-]+\s+){1,3}$"
)
_PEOPLE_GROUP = re.compile(r"\ba person(?:(?:\s*,\s*|\s*,?\s+(?:and|&)\s+)a person){1,9}\b(?!['’])")  # up to "ten people"
_LEADING_COMMA = re.compile(r"\s*,")
_NEAR = 200  # characters before a name that decide how it is replaced
_NUMBER_WORDS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


# A "name" made of these is a place or a facility, which the model sometimes calls PERSON
# ("Abbey Road", "Launch Complex"): not a person's name.
PLACE_WORDS = frozenset(
    "complex center centre station pad base park airport port bridge tower hall museum stadium street st road rd avenue ave "
    "boulevard lane square plaza lake river mount mountain valley beach island bay harbour harbor church cathedral temple "
    "mosque palace castle fort school university college hospital building garden gardens zoo market mall hotel library "
    "theatre theater arena field canyon falls monument memorial cape point peninsula gate pier".split()
)
# Text quoted from the image (OCR) is the image's, not a description: never edited for names.
_QUOTED = re.compile(r'"[^"\n]{0,1000}"|“[^”\n]{0,1000}”')


def _not_a_person(name: str) -> bool:
    words = re.findall(r"[a-z0-9]+", name.lower())
    return any(w in PLACE_WORDS or w.isdigit() for w in words)


class EntityLike(Protocol):
    start: int
    end: int
    label: str


def remove_person_names(text: str, entities: Sequence[EntityLike]) -> tuple[str, list[str]]:
    """Replace people's names (PERSON entities of ``text``) by the policy above; return the new
    text and the names removed."""
    removed: list[str] = []
    ends = {e.end for e in entities if e.label != "PERSON"}
    quoted = [m.span() for m in _QUOTED.finditer(text)]  # in order, not overlapping
    starts = [a for a, _ in quoted]

    def in_quotes(at: int) -> bool:
        i = bisect.bisect_right(starts, at) - 1
        return i >= 0 and at < quoted[i][1]

    people = [e for e in entities if e.label == "PERSON" and not _not_a_person(text[e.start : e.end]) and not in_quotes(e.start)]
    for ent in sorted(people, key=lambda e: -e.start):
        start, end = ent.start, ent.end
        if text[start:end].endswith(("'s", "’s")):  # the model may take the possessive into the name
            end -= 2
        # What decides is next to the name: the rules look at a window before it (``near``),
        # not at the whole text again for every name (many names would cost the square of
        # the text's length).
        head, near, after = text[: max(0, start - _NEAR)], text[max(0, start - _NEAR) : start], text[end:]
        if (
            text[start:end].lower().startswith("the ")
            or _THE_BEFORE.search(near)
            or _PET_BEFORE.search(near)
            or _PET_AFTER.match(after[:_NEAR])
            or (start - 1 in ends and near.endswith(" "))
        ):
            continue
        removed.append(text[start:end])
        honorific = _HONORIFIC_BEFORE.search(near)
        if honorific:
            near = near[: honorific.start()]
        possessive = _POSSESSIVE.match(after)
        after = after[possessive.end() :] if possessive else after
        if _BY_BEFORE.search(near) and not possessive:  # "the Mona Lisa by Leonardo": nothing left to say
            text = head + _BY_BEFORE.sub("", near) + after
            continue
        role = _ROLE_BEFORE.search(near)
        if role:  # "the astronaut Eileen Collins" -> "the astronaut"
            before = (head + near[: role.start(1) if role.group(1) else len(near)]).rstrip()
            comma = _LEADING_COMMA.match(after) if role.group(1) else None
            after = after[comma.end() :] if comma else after  # the apposition's closing comma
            text = before + ("'s" if possessive else "") + after
            continue
        noun = "person" if _ARTICLE_AND_WORDS.search(near) else "a person"
        text = head + near + noun + ("'s" if possessive else "") + after

    def people(m: re.Match[str]) -> str:
        n = m.group(0).count("a person")
        return f"{_NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else n} people"

    return _PEOPLE_GROUP.sub(people, text), removed[::-1]


@dataclass
class SensitiveResult:
    text: str
    removed: dict[str, list[str]] = field(default_factory=dict)  # category -> words removed

    @property
    def changed(self) -> bool:
        return bool(self.removed)


def _fix_articles(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        article, space, first = m.groups()
        wanted = "an" if first.lower() in "aeiou" else "a"
        wanted = wanted.capitalize() if article[0].isupper() else wanted
        return f"{wanted}{space}{first}"

    return _ARTICLE.sub(fix, text)


class SensitiveAttributeFilter:
    def check(self, text: str, entities: Sequence[EntityLike] = ()) -> SensitiveResult:
        """``entities``: the named entities of ``text``, when a model found them; people's
        names among them are removed first, so that attributes of the "person" left are too."""
        removed: dict[str, list[str]] = {}

        def note(category: str, words: str) -> None:
            removed.setdefault(category, []).append(" ".join(words.split()).lower())

        out = text
        if entities:
            out, names = remove_person_names(out, entities)
            for name in names:
                note("names", name)
        for category, pattern in _ADJ.items():
            out = pattern.sub(lambda m, c=category: (note(c, m.group(1)), "")[1], out)

        def trait_noun(m: re.Match[str]) -> str:
            category, neutral = TRAIT_NOUNS[m.group(2).lower()]
            note(category, m.group(2))
            return f"{m.group(1)} {neutral}" if m.group(1) else neutral

        out = _TRAIT_NOUN.sub(trait_noun, out)

        def hair(m: re.Match[str]) -> str:
            lead, before, after, noun = m.group(1) or "", m.group(2) or "", m.group(3) or "", m.group(4)
            note("hair_colour", m.group(0))
            if not (before or after):
                # "with gray hair" says nothing once the colour is gone; "a white beard" is "a beard".
                return "" if lead else noun
            kept = " ".join(part.strip() for part in (lead, before, after, noun) if part.strip())
            return f" {kept}" if lead else kept

        out = _HAIR.sub(hair, out)
        out = _SKIN.sub(lambda m: (note("skin", m.group(0)), "")[1], out)
        out = _EMOTION_PHRASE.sub(lambda m: (note("emotion", m.group(0)), "")[1], out)
        out = _EMOTION_VERB.sub(lambda m: (note("emotion", m.group(0)), "")[1], out)
        for rule, category in ((remove_contacts, "contact_details"), (remove_urls, "contact_details")):
            cleaned = rule(out)
            if cleaned != out:
                note(category, "contact details")
                out = cleaned
        if removed:
            out = _ARTICLE_COMMA.sub(r"\1 ", _DOUBLE_COMMA.sub(",", out))
            out = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", out)).strip(" ,")
            out = _fix_articles(out)
        return SensitiveResult(out, removed)
