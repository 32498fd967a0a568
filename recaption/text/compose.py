"""The rule-based caption writer: alt-text + tags + OCR text -> a clean caption.

Deterministic: the same evidence always gives the same caption. Following the annotation
guideline (DESIGN.md) it

- starts with a short prompt chosen from evidence ("a black and white photo of" for grey
  images, "a product photo of" for objects on white, "a painting of" when the alt-text says
  so, ...), replacing whatever prompt the alt-text had;
- keeps the cleaned alt-text whole: it carries the concrete names ("a Bentley", not "a car");
- adds classifier labels the alt-text does not already say, plainly when confident and
  hedged ("possibly a ...") when not, never two labels with the same head noun, and none of
  a kind the alt-text already names in other words ("a Bentley" says car, so no "sports
  car"; see ``recaption.text.kinds``);
- transcribes readable OCR text in quotes;
- fits a token budget by dropping whole clauses from the end (tags, then OCR), never words
  of the alt-text unless it alone is too long.

Sensitive attributes are not this module's business: the ``sensitive_check`` stage runs on
every caption after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recaption.text.clean import says_nothing
from recaption.text.fit import fit_to_budget
from recaption.text.grammar import article_for, own_medium, with_article
from recaption.text.kinds import kinds_named

DEFAULT_PROMPT = "a photo of"
# (pattern in the alt-text, prompt): the alt-text's own word for the medium wins.
MEDIUM_PROMPTS = [
    (re.compile(r"(?i)\b(?:oil\s+)?painting\b|\bwatercolou?r\b|\boil on canvas\b"), "a painting of"),
    (re.compile(r"(?i)\b(?:illustration|drawing|sketch|cartoon|clip ?art|vector art)\b"), "an illustration of"),
    (re.compile(r"(?i)\b(?:3d )?render(?:ing)?\b|\bcgi\b|\b3d model\b"), "a rendering of"),
    (re.compile(r"(?i)\bscreenshot\b|\bscreen ?grab\b"), "a screenshot of"),
    (re.compile(r"(?i)\bclose[- ]?up\b|\bmacro\b"), "a close-up photo of"),
]
GREY_COLOURFULNESS = 2.0  # mean RGB channel spread below this: a black and white image
PRODUCT_WHITE_BORDER = 0.85  # share of the outer ring that is near white: an object on white
_OWN_PROMPT = re.compile(
    r"(?i)^\s*(?:(?:a|an|the)\s+)?(?:(?:black[- ]and[- ]white|close[- ]up|product|stock|aerial|oil|3d)\s+)?"
    r"(?:photo|photograph|picture|image|pic|shot|snapshot|painting|illustration|drawing|sketch|rendering|render|"
    r"screenshot)\s+(?:of|showing|shows)\s+"
    r"|^\s*(?:(?:a|an|the)\s+)?(?:close[- ]?up|macro)(?:\s+(?:shot|photo|photograph))?\s+of\s+"
)
# The medium words a prompt already says, removed from the subject so they are not said twice.
_SAID_BY_PROMPT = {
    "a black and white photo of": re.compile(r"(?i),?\s*\b(?:in\s+)?black[- ]and[- ]white\b"),
    "a close-up photo of": re.compile(r"(?i),?\s*\b(?:close[- ]?up|macro)(?:\s+(?:shot|photo))?\b"),
}
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Label:
    name: str  # "tabby cat"
    noun: str  # "cat"
    p: float
    kind: str = ""  # "" or a kind of recaption.text.kinds


@dataclass
class Evidence:
    alt_text: str = ""
    labels: list[Label] = field(default_factory=list)
    ocr: list[str] = field(default_factory=list)
    colourfulness: float | None = None
    white_border: float | None = None
    faces: int = 0  # faces the detector found: people, counted, and nothing else said of them


_COUNT_WORDS = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def people_phrase(n: int) -> str:
    """"a person", "two people" ... "ten people", then "a group of people" (the guideline counts to ten)."""
    if n <= 0:
        return ""
    if n == 1:
        return "a person"
    return f"{_COUNT_WORDS[n]} people" if n < len(_COUNT_WORDS) else "a group of people"


@dataclass
class ComposedCaption:
    text: str
    prompt: str
    tags: list[str]
    hedged: list[str]
    ocr: list[str]
    subject: str  # what the caption is about, "" when no evidence said

    @property
    def says_anything(self) -> bool:
        return bool(self.subject or self.tags or self.hedged or self.ocr)


def choose_prompt(ev: Evidence) -> str:
    for pattern, prompt in MEDIUM_PROMPTS:
        if pattern.search(ev.alt_text):
            return prompt
    if ev.colourfulness is not None and ev.colourfulness < GREY_COLOURFULNESS:
        return "a black and white photo of"
    if ev.white_border is not None and ev.white_border >= PRODUCT_WHITE_BORDER:
        return "a product photo of"
    return DEFAULT_PROMPT


def _article(phrase: str) -> str:
    return f"{article_for(phrase)} {phrase}"


def _words(text: str) -> set[str]:
    words = set(_WORD.findall(text.lower()))
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 3}  # "cats" says "cat"


def mentioned(label: Label, words: set[str]) -> bool:
    """Whether the alt-text already says this label: its head noun, any word of its name, or
    any word of its kind ("bentley" says every label of kind "car")."""
    return bool(_words(label.noun) <= words or _words(label.name) & words or (label.kind and label.kind in kinds_named(words)))


def tag_agreement(ev: Evidence) -> float:
    """How much of the classifier's belief the alt-text already states (0-1)."""
    words = _words(ev.alt_text)
    return round(min(1.0, sum(label.p for label in ev.labels if mentioned(label, words))), 4)


def _join(items: list[str], conjunction: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def compose(
    ev: Evidence,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    max_tags: int = 2,
    max_ocr_words: int = 8,
    confident: float = 0.6,
    hedge_min: float = 0.3,
    nlp: Any = None,
) -> ComposedCaption:
    """``nlp``: a spaCy pipeline with a parser, for the articles (none: the subject as written)."""
    prompt = choose_prompt(ev)
    subject = _OWN_PROMPT.sub("", ev.alt_text)
    own = own_medium(subject)
    if own:  # "Fundus photograph of a retina": the alt-text's medium is the prompt, never two media
        prompt, subject = own
    if prompt in _SAID_BY_PROMPT:
        subject = _SAID_BY_PROMPT[prompt].sub("", subject)
    subject = subject.strip().rstrip(".!?;:, ")
    if says_nothing(subject):
        subject = ""
    elif nlp is not None:
        subject = with_article(subject, nlp)
    words = _words(subject)
    sure: list[str] = []
    maybe: list[str] = []
    nouns: set[str] = set()
    for label in sorted(ev.labels, key=lambda lb: -lb.p):
        if len(sure) + len(maybe) >= max_tags or label.p < hedge_min:
            break
        if mentioned(label, words) or label.noun in nouns:
            continue
        nouns.add(label.noun)
        (sure if label.p >= confident else maybe).append(_article(label.name))
    if not subject and ev.faces:  # no alt-text: the people the detector found come first
        subject = people_phrase(ev.faces)
    if not subject:  # no alt-text: the most confident label is the subject
        if sure:
            subject = sure.pop(0)
        elif maybe:
            subject, maybe = f"what may be {maybe[0]}", maybe[1:]
    clauses = [f"{prompt} {subject}" if subject else prompt.rsplit(" of", 1)[0]]
    if sure:
        clauses.append(f"with {_join(sure, 'and')}")
    if maybe:
        clauses.append(f"possibly {_join(maybe, 'or')}")
    ocr_used: list[str] = []
    budget = max_ocr_words
    alt_lower = ev.alt_text.lower()
    for line in ev.ocr:
        n = len(line.split())
        if line.lower() in alt_lower or n > budget or len(_WORD.findall(line.lower())) == 0 or sum(ch.isalnum() for ch in line) < 2:
            continue  # "®" or "|" read on a blank image is no text
        ocr_used.append(line)
        budget -= n
    if ocr_used:
        clauses.append("with the text " + _join([f'"{line}"' for line in ocr_used], "and"))
    text = fit_to_budget(", ".join(clauses), count_tokens, max_tokens)
    return ComposedCaption(text, prompt, sure, maybe, ocr_used, subject)
