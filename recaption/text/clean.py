"""Alt-text cleaning rules, after the annotation guideline in DESIGN.md.

Each rule is a named function ``str -> str``. ``AltTextRules.clean`` runs the enabled rules
in a fixed order and reports which of them changed the text, so the report can show
before and after and a user can see which rule to switch off when it is too eager.

The rules remove what the image cannot show or what a caption must not carry (file
names, dates, URLs, credits, contact details, hashtags, emoji) and keep concrete names
and meaningful numbers ("a Bentley", "350ml", "1992").
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import ftfy

# --- patterns ----------------------------------------------------------------------------

_TAG = re.compile(r"<[^<>]{0,500}>")
_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"']+")
# Patterns here are linear in the text (hostile alt-text can be long): a run that a pattern
# scans starts only where the run starts (a lookbehind), and is taken possessively (``++``), so
# no start position re-reads what another already read.
_EMAIL = re.compile(r"(?i)(?<![\w.+-])[\w.+-]++@[\w-]++(?:\.[\w-]++)+\b")
# Phone numbers: +country, groups of digits with separators, at least 8 digits in all.
_PHONE = re.compile(r"(?<![\w/])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){2,4}(?![\w/])")
_IMAGE_EXT = r"(?:jpe?g|png|gif|webp|bmp|tiff?|heic|raw|cr2|nef)"
_FILENAME = re.compile(
    r"(?i)(?<![\w])(?:"
    rf"(?<![\w-])[\w-]++\.{_IMAGE_EXT}"  # anything.jpg
    r"|(?:IMG|DSC|DSCN|DSCF|DCIM|PXL|MVIMG|GOPR|SAM|P\d{3})[_-]?\d{3,}(?:[_-]\d+)*"  # camera names
    r"|\d{8}[_-]\d{6}(?:[_-]\w+)?"  # 20190512_123456
    r")(?![\w])"
)
# What a file is rather than what it shows: formats, bit depths, colour models, print notes,
# pixel sizes ("16-bit PNG", "print-ready CMYK file", "old 16-colour GIF", "1920x1080", "300 dpi").
_FORMATS = r"(?:png|jpe?g|gif|tiff?|svg|eps|psd|raw|webp|bmp|heic|pdf)"
_FILE_METADATA = re.compile(
    r"(?i)(?<![\w-])(?:(?:old|new|original|hi(?:gh)?[- ]?(?:res(?:olution)?|quality)|low[- ]?(?:res(?:olution)?|quality))\s+)?(?:"
    rf"\d{{1,2}}[- ]bit(?:\s+(?:colou?r|grey|gray|{_FORMATS}))+"  # "16-bit PNG", not "a 16-bit console"
    rf"|\d{{1,3}}[- ]colou?r(?:\s+{_FORMATS})?"
    r"|print[- ]ready(?:\s+(?:cmyk|rgb|pdf))?(?:\s+(?:file|version|image))?"
    rf"|(?:cmyk|s?rgb)\s+(?:file|version|image|{_FORMATS})"  # "CMYK file", not "RGB LED strip"
    rf"|{_FORMATS}\s+(?:file|image|format|version|export)"
    r"|\d{2,5}\s*[x×]\s*\d{2,5}(?:\s*(?:px|pixels))?"
    r"|\d{2,4}\s*dpi"
    r"|hi(?:gh)?[- ]?res(?:olution)?|low[- ]?res(?:olution)?"
    r")(?![\w-])"
)
_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DATE = re.compile(
    r"(?i)(?<![\w])(?:(?:at|on)\s+)?(?:"
    r"\d{1,2}\.\d{2}(?:\.\d{2})?\s*[ap]\.?m\.?"  # 10.32.11 AM, 9.15 pm (first: "10.32.11" alone reads as a date)
    r"|\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"  # ISO
    r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}"  # 12/05/2019, 12.05.19
    rf"|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"  # May 12, 2019
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTHS}\.?,?\s+\d{{4}}"  # 12 May 2019
    r"|\d{1,2}:\d{2}(?::\d{2})?\s*(?:[ap]\.?m\.?)?"  # 14:32, 2:05 pm
    r")(?![\w])"
)
# A credited name runs to the end of its clause; "J. Doe" keeps going past the initial's dot.
_NAME_RUN = r"(?:(?-i:[A-Z])\.\s*|[^,.;|\n])*"  # case-sensitive initial inside an (?i) pattern
# Credit and stock boilerplate. Credit lines run to the end of their clause.
_CREDIT = re.compile(
    r"(?i)(?:"
    r"\b(?:image|photo|picture)\s+may\s+contain\s*:?"
    r"|\b(?:royalty[- ]free\s+)?stock\s+(?:photo|image|picture|footage)s?\b(?:\s*[:-])?"
    r"|\ball\s+rights\s+reserved\b\.?"
    r"|(?:©|\(c\)|copyright)\s*(?:\d{4}\s*)?[^,.;|\n]*"
    rf"|\b(?:photo(?:graph)?(?:ed)?|picture|image|shot|taken)\s+(?:by|credit|courtesy(?:\s+of)?)\s*:?\s*{_NAME_RUN}"
    rf"|\b(?:credits?|courtesy(?:\s+of)?|source|via)\s*:\s*{_NAME_RUN}"
    r"|\b(?:getty\s+images|shutterstock|istock(?:photo)?|alamy|dreamstime|depositphotos|123rf|adobe\s+stock)\b"
    # Calls to action run to the end of their sentence: they never describe the image.
    r"|\b(?:more\s+(?:photos|pictures|images)\s+(?:on|at)|follow\s+us|visit\s+(?:us|our)|click\s+here|"
    r"see\s+more\s+(?:at|on)|shop\s+now|buy\s+now|subscribe\s+(?:to|for)|call\s+(?:us\s+)?(?:for|at|now|today))[^.!?\n]*[.!?]*"
    r")"
)
_MENTION = re.compile(r"(?i)(?:\b(?:via|by|from|cc)\s+)?(?<![\w@])@\w{1,30}")
_WHOLE_HASHTAG = re.compile(r"#\w+")
_WHITESPACE_SPLIT = re.compile(r"(\s+)")
_HASHTAG = re.compile(r"(?<![\w&])#(\w+)")  # inline: keep the word, drop the '#'
_EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, symbols & supplemental
    "\U00002600-\U000027bf"  # misc symbols, dingbats
    "\U0001f1e6-\U0001f1ff"  # regional indicators (flags)
    "\u2300-\u23ff"  # misc technical (watch, hourglass)
    "\u2b00-\u2bff"  # arrows and stars
    "\ufe0f\u200d\u20e3"  # variation selector, zero-width joiner, keycap
    "]+"
)
_INVISIBLE = re.compile("[\u200b\u200c\u200e\u200f\u2060\ufeff\u00ad]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_REPEATED_PUNCT = re.compile(r"([!?.,;:*~_=+\-|/\\])\1+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)\]])")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]|\{\s*\}|\"\s*\"")
_EDGE_JUNK = " ,;:|/\\-–—•·*~_=+"  # stripped from both ends once spaces are single
_DANGLING_SEPARATORS = re.compile(r"\s*[|•·]\s*(?=[|•·]|$)|\s+[-–—]\s+(?=[-–—]|$)")
_SPACES = re.compile(r"\s+")

# Chat slang and frequent web typos. Whole words only; the replacement keeps a leading capital.
SLANG_AND_TYPOS: dict[str, str] = {
    "u": "you",
    "ur": "your",
    "r": "are",
    "pic": "picture",
    "pics": "pictures",
    "pix": "pictures",
    "thru": "through",
    "tho": "though",
    "w/": "with",
    "w/o": "without",
    "b/c": "because",
    "bc": "because",
    "gonna": "going to",
    "wanna": "want to",
    "luv": "love",
    "nite": "night",
    "b4": "before",
    "2nite": "tonight",
    "bday": "birthday",
    "pls": "please",
    "plz": "please",
    "teh": "the",
    "adn": "and",
    "hte": "the",
    "recieve": "receive",
    "beautifull": "beautiful",
    "beatiful": "beautiful",
    "wich": "which",
    "untill": "until",
    "occured": "occurred",
    "seperate": "separate",
    "definately": "definitely",
    "tommorow": "tomorrow",
    "accomodation": "accommodation",
    "resturant": "restaurant",
    "neighbour hood": "neighbourhood",
    "lookin": "looking",
    "goin": "going",
    "doin": "doing",
    "nothin": "nothing",
    "somethin": "something",
    "chillin": "chilling",
    "runnin": "running",
    "playin": "playing",
    "sittin": "sitting",
    "waitin": "waiting",
}
_SLANG = re.compile(
    r"(?i)(?<![\w/])(" + "|".join(re.escape(k) for k in sorted(SLANG_AND_TYPOS, key=len, reverse=True)) + r")(?![\w/])"
)


# --- rules -------------------------------------------------------------------------------


def fix_mojibake(text: str) -> str:
    # ftfy undoes UTF-8 read as Latin-1/cp1252 ("cafÃ©" -> "café") and fixes curly quotes.
    return ftfy.fix_text(text, normalization="NFC", uncurl_quotes=True, unescape_html=False)  # "html" owns entities


def normalise_unicode(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return _INVISIBLE.sub("", text)


def strip_html(text: str) -> str:
    for _ in range(3):  # doubly-escaped entities ("&amp;amp;") are common in scraped alt-text
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return _TAG.sub(" ", text)


def remove_urls(text: str) -> str:
    return _URL.sub(" ", text)


def _phone_or_keep(m: re.Match[str]) -> str:
    # Fewer than 8 digits is more likely a size, a count or a model number than a phone.
    return " " if sum(ch.isdigit() for ch in m.group(0)) >= 8 else m.group(0)


def remove_contacts(text: str) -> str:
    return _PHONE.sub(_phone_or_keep, _EMAIL.sub(" ", text))


def remove_file_names(text: str) -> str:
    return _FILENAME.sub(" ", text)


def remove_file_metadata(text: str) -> str:
    return _FILE_METADATA.sub(" ", text)


def remove_dates(text: str) -> str:
    return _DATE.sub(" ", text)


def remove_credits(text: str) -> str:
    return _CREDIT.sub(" ", text)


def _strip_trailing_hashtags(text: str) -> str:
    """Drop a block of hashtags that ends the text ("... #sunset #beach"), word by word from the
    end (a regex anchored at the end would try every start position: quadratic)."""
    parts = _WHITESPACE_SPLIT.split(text)
    keep, found = len(parts), False
    while keep and (not parts[keep - 1] or parts[keep - 1].isspace() or _WHOLE_HASHTAG.fullmatch(parts[keep - 1])):
        found = found or parts[keep - 1].startswith("#")
        keep -= 1
    return "".join(parts[:keep]) if found else text


def remove_hashtags_and_mentions(text: str) -> str:
    text = _MENTION.sub(" ", text)
    text = _strip_trailing_hashtags(text)
    return _HASHTAG.sub(r"\1", text)


def remove_emoji(text: str) -> str:
    return _EMOJI.sub(" ", text)


def fix_slang_and_typos(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        word = m.group(1)
        repl = SLANG_AND_TYPOS[word.lower()]
        return repl[0].upper() + repl[1:] if word[0].isupper() and len(word) > 1 else repl

    return _SLANG.sub(replace, text)


def tidy_punctuation(text: str) -> str:
    # Spaces first: a removal leaves "pad. . The", which must end as one full stop.
    text = _EMPTY_BRACKETS.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _DANGLING_SEPARATORS.sub("", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(lambda m: "..." if m.group(1) == "." and len(m.group(0)) >= 3 else m.group(1), text)
    text = text.strip(_EDGE_JUNK)
    return _SPACES.sub(" ", text).strip()


# The order matters: entities must be decoded before tags are seen, URLs removed before
# e-mails and file names (both can sit inside a URL), dates before phone numbers (a date
# with a time looks like a phone number), credits before the punctuation tidy.
RULES: dict[str, Callable[[str], str]] = {
    "mojibake": fix_mojibake,
    "unicode": normalise_unicode,
    "html": strip_html,
    "urls": remove_urls,
    "file_names": remove_file_names,
    "file_metadata": remove_file_metadata,
    "dates": remove_dates,
    "contacts": remove_contacts,
    "credits": remove_credits,
    "hashtags_mentions": remove_hashtags_and_mentions,
    "emoji": remove_emoji,
    "slang_typos": fix_slang_and_typos,
    "punctuation": tidy_punctuation,
}


# Words that name no content ("Image!", "Untitled photo"): a text of only these says nothing
# about what the image shows, and is never a training caption.
NO_CONTENT_WORDS = frozenset(
    "image images photo photos photograph picture pictures pic pics img untitled thumbnail file default placeholder "
    "no title stock the a an screenshot screenshots snapshot scan scanned capture upload uploaded edited edit final copy "
    "version original download at on taken".split()
)
_CONTENT_WORD = re.compile(r"[a-z0-9]+")


def says_nothing(text: str) -> bool:
    """Whether a (cleaned) text names nothing the image could show."""
    return set(_CONTENT_WORD.findall(text.lower())) <= NO_CONTENT_WORDS


@dataclass
class CleanResult:
    text: str
    changed_by: list[str]


class AltTextRules:
    """The enabled cleaning rules, in order."""

    def __init__(self, disabled: list[str] | tuple[str, ...] = ()) -> None:
        unknown = sorted(set(disabled) - set(RULES))
        if unknown:
            raise ValueError(f"unknown cleaning rule(s) {unknown}; the rules are {list(RULES)}")
        self.rules = [(name, fn) for name, fn in RULES.items() if name not in disabled]

    def clean(self, text: str) -> CleanResult:
        changed: list[str] = []
        for name, fn in self.rules:
            new = fn(text)
            if new != text:
                # Whitespace-only differences are the tidy rule's business, not this rule's.
                if _SPACES.sub(" ", new).strip() != _SPACES.sub(" ", text).strip():
                    changed.append(name)
                text = new
        if "punctuation" not in dict(self.rules):
            text = _SPACES.sub(" ", text).strip()  # never leave the whitespace a removal made
        return CleanResult(text, changed)
