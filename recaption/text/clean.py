"""Alt-text cleaning rules, after the annotation guideline in ARCHITECTURE.md.

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
# Phone numbers in the common formats: "+1 (555) 123-4567", "+44 20 7946 0958", "(555) 123 4567",
# "020 7946 0958", "555.123.4567" (at least 8 digits: fewer is more likely a size or a count),
# and any run of 7+ digits after a phone label ("Phone: 555-1234", "tel. 5551234").
_PHONE = re.compile(
    r"(?<![\w/+])(?:"
    r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]\d{2,4}){1,4}"
    r"|\(\d{2,4}\)[\s.-]?\d{2,4}(?:[\s.-]\d{2,4}){1,3}"
    r"|\d{2,4}(?:[\s.-]\d{2,4}){2,4}"
    r")(?![\w/])"
)
_LABELLED_PHONE = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|whatsapp)\b\.?\s?:?\s?\+?\d[\d\s.()-]{5,20}\d(?![\w/])")
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
# Sites whose name in an alt-text is a credit ("A cat on a windowsill | Pinterest", "via Houzz").
_SITES = (
    r"(?:pinterest|flickr|instagram|tumblr|houzz|etsy|ebay|facebook|twitter|reddit|imgur|unsplash|pexels|pixabay|"
    r"wikimedia(?:\s+commons)?|wikipedia|youtube|behance|dribbble|deviantart|500px)(?:\.com)?"
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
    r"|\b(?:getty\s+images|shutterstock|istock(?:photo)?|alamy|dreamstime|depositphotos|123rf|adobe\s+stock)\b(?:[\s#:-]{1,3}\d{5,})?"
    r"|\b(?:stock\s+(?:photo|image)\s+)?(?:id|no\.|#)\s?[:#]?\s?\d{5,}\b"  # "Stock photo ID 123456789"
    rf"|\bvia\s+{_SITES}\b"
    rf"|(?:\b(?:photo|image|picture)\s?:\s?)?\b(?:AP|AFP|Reuters|EPA|Getty|Xinhua)\s?/\s?{_NAME_RUN}"  # "Photo: AP/Jane Doe"
    # Science agencies credited together ("NASA/ESA", "NASA/JPL-Caltech"); a lone "NASA" may be content.
    r"|\b(?-i:NASA|ESA|JPL|NOAA|USGS|ESO|STScI|JAXA|CNES)(?:\s?/\s?(?-i:NASA|ESA|JPL|NOAA|USGS|ESO|STScI|JAXA|CNES|Caltech)(?:-Caltech)?)++\b"
    # Calls to action run to the end of their sentence: they never describe the image.
    r"|\b(?:more\s+(?:photos|pictures|images)\s+(?:on|at)|follow\s+us|visit\s+(?:us|our)|click\s+here|"
    r"see\s+more\s+(?:at|on)|shop\s+now|buy\s+now|subscribe\s+(?:to|for)|call\s+(?:us\s+)?(?:for|at|now|today))[^.!?\n]*[.!?]*"
    r")"
)
# Promotion: a sentence, clause or separated segment ("... | ...", "... - ...") that asks the reader
# to do something never describes the image, so the whole segment goes.
_PROMOTION = re.compile(
    r"(?i)\b(?:follow\s+(?:us|me|@|\w+\s+(?:for|on)\b)|(?:order|shop|buy|book|call|subscribe|sign\s+up|register|download|"
    r"save|get\s+yours)\s+(?:now|today)\b|check\s+out\b|don'?t\s+forget\b|like\s+and\s+(?:share|subscribe)\b|"
    r"contact\s+us\b|click\s+(?:here|the\s+link)\b|link\s+in\s+(?:my\s+|our\s+)?(?:bio|profile)\b|"
    r"for\s+more\s+(?:info|information|details|photos|pictures|images|ideas)\b|visit\s+(?:us|our|the\s+(?:website|shop|store))\b|"
    r"call\s+(?:us\s+)?(?:on\s+|at\s+)?[+(\d]|free\s+shipping\b|limited\s+(?:time\s+)?offer\b|\d{1,2}\s?%\s?off\b)"
    r"|^\s*(?:sale|new|hot|deal)\s*!"
)
_SITE_SEGMENT = re.compile(rf"(?i)(?:(?:via|on|from|source)\s*:?\s+)?{_SITES}")
# A separator starts only where its whitespace run starts (possessive): linear on long runs.
_SEGMENTS = re.compile(r"((?<=[.!?])\s++|[,;]\s++|(?<!\s)\s++[|•·]\s++|(?<!\s)\s++[-–—]\s++)")
_SEGMENT_EDGE = " .!?,;:|-–—•·"
# Camera settings: "shot with a Canon EOS 5D Mark IV", "Nikon D850", "f/8", "1/125s", "ISO 100", "24-70mm".
_CAMERA_BRANDS = r"(?:canon|nikon|sony|fuji(?:film)?|olympus|panasonic|lumix|leica|pentax|hasselblad|gopro|dji|iphone)"
# "Shot with ..." runs to the end of its clause; ISO, shutter speeds and exposures only ever
# describe how a photo was taken. Lens and body names ("Nikon D850", "f/2.8", "24-70mm") can
# also be a product's own description, so they go only beside those.
_SHOT_WITH = re.compile(
    rf"(?i)\b(?:shot|taken|captured|photographed)\s+(?:with|on|using)\s+(?:an?\s+|my\s+)?{_CAMERA_BRANDS}\b[^,.;!?\n]*+"
)
_EXPOSURE = re.compile(
    r"(?i)(?<![\w/])(?:iso\s?\d{2,6}|1/\d{1,5}\s?(?:s|sec|second)\b|\d{1,2}(?:\.\d)?\s?(?:s|sec)\s+exposure)(?![\w/])"
)
_LENS_AND_BODY = re.compile(
    r"(?i)(?<![\w/])(?:"
    rf"{_CAMERA_BRANDS}\s+(?:[a-z]{{1,4}}\s+)?(?=[a-z-]*\d)[\w-]++(?:\s+mark\s+[ivx]+)?"  # "Nikon D850", "Canon EOS 5D Mark IV"
    r"|f\s?/\s?\d{1,2}(?:\.\d)?"  # aperture
    r"|\d{1,3}(?:-\d{1,3})?\s?mm"  # focal length
    r")(?![\w/])"
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


def remove_promotions(text: str) -> str:
    """Drop every sentence or separated segment that advertises ("Follow us for more!", "Order
    now!", "Call +1 555 ... today") or only names a site ("| Pinterest"): the whole segment, so
    no fragment like "Contact us at or call" is left. One pass over the segments: linear."""
    parts = _SEGMENTS.split(text)
    if len(parts) == 1 and not _PROMOTION.search(text) and not _SITE_SEGMENT.fullmatch(text.strip(_SEGMENT_EDGE)):
        return text
    kept: list[str] = []
    for k in range(0, len(parts), 2):
        segment = parts[k]
        if _PROMOTION.search(segment) or _SITE_SEGMENT.fullmatch(segment.strip(_SEGMENT_EDGE)):
            continue
        if kept:
            kept.append(parts[k - 1])  # the separator before a kept segment
        kept.append(segment)
    return "".join(kept) if kept else " "


def remove_camera_settings(text: str) -> str:
    """"Shot with a Canon EOS 5D Mark IV, f/8, 1/125s, ISO 100" goes whole; "Nikon D850 with a
    24-70mm f/2.8 lens" (a product) stays: lens and body go only where exposure settings are."""
    shot = _SHOT_WITH.sub(" ", text)
    settings = _EXPOSURE.sub(" ", shot)
    if settings == text:
        return text
    return _LENS_AND_BODY.sub(" ", settings)


def remove_urls(text: str) -> str:
    return _URL.sub(" ", text)


def _phone_or_keep(m: re.Match[str]) -> str:
    # Fewer than 8 digits is more likely a size, a count or a model number than a phone.
    return " " if sum(ch.isdigit() for ch in m.group(0)) >= 8 else m.group(0)


def remove_contacts(text: str) -> str:
    # Full numbers first; a label ("Phone: 555-1234") then takes a shorter one with it.
    return _LABELLED_PHONE.sub(" ", _PHONE.sub(_phone_or_keep, _EMAIL.sub(" ", text)))


_STEM_WORD = re.compile(r"[A-Za-z]{2,}+")
_CAMERA_PREFIX = re.compile(r"(?i)(?:img|dsc|dscn|dscf|dcim|pxl|mvimg|gopr|sam|screenshot|image|photo|pic|final|edit|edited|copy|scan)")


def _file_name_words(m: re.Match[str]) -> str:
    """A file name that carries words keeps them ("dog.jpg" -> "dog", "my_dog_rex.png" -> "my
    dog rex"); camera names, numbers and hashes go."""
    name = m.group(0)
    stem, dot, ext = name.rpartition(".")
    if not dot or not re.fullmatch(_IMAGE_EXT, ext, re.IGNORECASE):
        return " "
    parts = re.split(r"[_\-\s]+", stem)
    words = [w for w in parts if _STEM_WORD.fullmatch(w) and not _CAMERA_PREFIX.fullmatch(w)]
    return f" {' '.join(words)} " if words else " "


def remove_file_names(text: str) -> str:
    said = set(_STEM_WORD.findall(_FILENAME.sub(" ", text).lower()))

    def words_not_said(m: re.Match[str]) -> str:  # "galaxies - hubble_deep_field.jpg" says nothing new
        kept = _file_name_words(m)
        return " " if set(kept.lower().split()) <= said else kept

    return _FILENAME.sub(words_not_said, text)


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
    text = text.strip(_EDGE_JUNK).lstrip(".!?,;: ")  # ". Mountain biker" after a removed credit
    return _SPACES.sub(" ", text).strip()


# The order matters: entities must be decoded before tags are seen, URLs removed before
# e-mails and file names (both can sit inside a URL), dates before phone numbers (a date
# with a time looks like a phone number), credits before the punctuation tidy.
RULES: dict[str, Callable[[str], str]] = {
    "mojibake": fix_mojibake,
    "unicode": normalise_unicode,
    "html": strip_html,
    "promotions": remove_promotions,
    "urls": remove_urls,
    "file_names": remove_file_names,
    "file_metadata": remove_file_metadata,
    "camera_settings": remove_camera_settings,
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
_NO_CONTENT_TOKEN = re.compile(r"\d+|v\d+|of")  # "Image 3 of 12", "final v2"


def says_nothing(text: str) -> bool:
    """Whether a (cleaned) text names nothing the image could show."""
    return all(w in NO_CONTENT_WORDS or _NO_CONTENT_TOKEN.fullmatch(w) for w in _CONTENT_WORD.findall(text.lower()))


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
