"""Remove sensitive attributes of people and identifying details from a caption.

The annotation guideline (DESIGN.md) forbids describing a person's race or ethnicity, skin
or hair colour, health, religion, politics, sexual orientation, facial expression or
emotion, and any identifying information. Captions from every source (alt-text, rules,
VLMs, humans) pass through ``SensitiveAttributeFilter``, which removes such words where
they describe a person and reports what it removed, by category.

Colour and mood words are only removed where they describe a person ("a smiling woman",
"an Asian man", "with blonde hair"); "a black cat", "a white house" and "a happy meal" are
untouched. Personal names need a named-entity model and are not handled here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from recaption.text.clean import remove_contacts, remove_urls

PERSON_NOUNS = (
    r"(?:man|men|woman|women|boy|boys|girl|girls|person|people|persons|child|children|kid|kids|guy|guys|"
    r"lady|ladies|gentleman|gentlemen|baby|babies|toddler|teen|teens|teenager|teenagers|adult|adults|"
    r"player|players|student|students|worker|workers|couple|family|families|mother|father|mom|dad|"
    r"son|daughter|brother|sister|grandmother|grandfather|wife|husband|bride|groom|athlete|athletes|"
    r"doctor|nurse|soldier|soldiers|tourist|tourists|crowd|individual|individuals)"
)

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
_ADJ = {
    cat: re.compile(rf"(?i)\b({words})\b(?=(?:[\s,]+(?:and\s+)?{_BETWEEN}\b)*[\s,]+{PERSON_NOUNS}\b)")
    for cat, words in ADJECTIVES.items()
}
_TRAIT_NOUN = re.compile(r"(?i)\b(a|an|the)?\s*\b(" + "|".join(TRAIT_NOUNS) + r")\b(?!\s+(?:hair|woman|man|girl|boy|person|lady))")
_HAIR = re.compile(
    rf"(?i)(\s*\b(?:with|has|having)\s+)?\b((?:long|short|curly|straight|wavy|thick|thin)\s+)?(?:{HAIR_COLOURS})"
    rf"(\s+(?:long|short|curly|straight|wavy))?\s+(hair|beard|moustache|mustache)\b"
)
_SKIN = re.compile(rf"(?i)\s*\b(?:with|has|having)\s+(?:(?:very|quite)\s+)?(?:{SKIN_WORDS})\s+(?:skin|complexion)\b")
_EMOTION_PHRASE = re.compile(
    rf"(?i)\s*(?:,\s*)?\b(?:(?:who|that)\s+(?:is|are|looks|look|seems|seem|appears|appear)\s+|(?:looking|appearing|seeming|feeling)\s+)"
    rf"(?:very\s+|quite\s+|so\s+|rather\s+)?(?:{EMOTION_WORDS})\b"
)
_EMOTION_VERB = re.compile(
    r"(?i)\s*\b(?:is\s+|are\s+)?(?:smiling|laughing|crying|frowning|grinning|sobbing|weeping|pouting|scowling)"
    r"(?:\s+(?:happily|broadly|widely|sadly|at\s+the\s+camera|at\s+the\s+viewer|at\s+each\s+other))?\b"
)
_ARTICLE = re.compile(r"(?i)\b(a|an)(\s+)(\w)")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_DOUBLE_COMMA = re.compile(r",\s*,")
_ARTICLE_COMMA = re.compile(r"(?i)\b(a|an|the)\s*,\s*")  # "a happy, smiling couple" minus both


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
    def check(self, text: str) -> SensitiveResult:
        removed: dict[str, list[str]] = {}

        def note(category: str, words: str) -> None:
            removed.setdefault(category, []).append(" ".join(words.split()).lower())

        out = text
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
