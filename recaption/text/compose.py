"""The rule-based caption writer: alt-text + tags + OCR text -> a clean caption.

Deterministic: the same evidence always gives the same caption. Following the annotation
guideline (ARCHITECTURE.md) it

- starts with a short prompt chosen from evidence ("a black and white photo of" for grey
  images, "a product photo of" for objects on white, "a painting of" when the alt-text says
  so, "a scan of" for a grey page mostly covered by text, "an illustration of" for a
  flat-colour graphic on white, ...), replacing whatever prompt the alt-text had; on a scanned
  page the classifier's objects are not said (a page of text is no pill bottle);
- keeps the cleaned alt-text whole: it carries the concrete names ("a Bentley", not "a car");
- adds what the classifier is sure of and the alt-text does not already say, read through
  WordNet's hierarchy (``recaption.text.concepts``): the most specific confident concept
  plainly, one more specific class hedged ("a dog, possibly a German Shepherd"), never two
  with the same head noun, and none of a kind the alt-text already names in other words ("a
  Bentley" says car, so no "sports car"; see ``recaption.text.kinds``);
- does not take an alt-text at its word where the classifier contradicts it: an alt-text
  naming a concept ImageNet knows ("a tabby cat") on an image the classifier is sure shows
  something else, with no mass on that concept, is set aside (``ComposedCaption.contradicted``);
- transcribes readable OCR text in quotes;
- fits a token budget by dropping whole clauses from the end (tags, then OCR), never words
  of the alt-text unless it alone is too long.

Sensitive attributes are not this module's business: the ``sensitive_check`` stage runs on
every caption after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from recaption.text.clean import says_nothing
from recaption.text.concepts import Claim, Concept, claims, hierarchy
from recaption.text.fit import fit_to_budget
from recaption.text.grammar import article_for, own_medium, with_article
from recaption.text.kinds import KIND_WORDS, kinds_named

DEFAULT_PROMPT = "a photo of"
# (pattern in the alt-text, prompt): the alt-text's own word for the medium wins.
MEDIUM_PROMPTS = [
    (re.compile(r"(?i)\b(?:oil\s+)?painting\b|\bwatercolou?r\b|\boil on canvas\b"), "a painting of"),
    (re.compile(r"(?i)\b(?:illustration|drawing|sketch|cartoon|clip ?art|vector art)\b"), "an illustration of"),
    (re.compile(r"(?i)\b(?:3d )?render(?:ing)?\b|\bcgi\b|\b3d model\b"), "a rendering of"),
    (re.compile(r"(?i)\bscreenshot\b|\bscreen ?grab\b"), "a screenshot of"),
    (re.compile(r"(?i)\bscanned\b"), "a scan of"),
    (re.compile(r"(?i)\bmicroscop(?:e|y|ic)\b|\bmicrograph\b|\bhistolog"), "a micrograph of"),
    (re.compile(r"(?i)\bclose[- ]?up\b|\bmacro\b"), "a close-up photo of"),
]
GREY_COLOURFULNESS = 2.0  # mean RGB channel spread below this: a black and white image
PRODUCT_WHITE_BORDER = 0.85  # share of the outer ring that is near white: an object on white
SCAN_PROMPT = "a scan of"
DOCUMENT_TEXT_SHARE = 0.3  # share of a grey image covered by OCR'd text from which it is a scanned page
FLAT_GRAPHIC = 0.4  # flat_share from which a colourful image on white is a graphic, not a photo
GRAPHIC_WHITE_BORDER = 0.3
_OWN_PROMPT = re.compile(
    r"(?i)^\s*(?:(?:a|an|the)\s+)?(?:(?:black[- ]and[- ]white|close[- ]up|product|stock|aerial|oil|3d)\s+)?"
    r"(?:photo|photograph|picture|image|pic|shot|snapshot|painting|illustration|drawing|sketch|rendering|render|"
    r"screenshot)\s+(?:of|showing|shows)\s+"
    r"|^\s*(?:(?:a|an|the)\s+)?(?:close[- ]?up|macro)(?:\s+(?:shot|photo|photograph))?\s+of\s+"
)
# The medium words a prompt already says, removed from the subject so they are not said twice.
_SAID_BY_PROMPT = {
    "a scan of": re.compile(r"(?i)\bscanned\s+"),
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
    index: int | None = None  # the ImageNet class, where known: places the label in the hierarchy


@dataclass
class Evidence:
    alt_text: str = ""
    labels: list[Label] = field(default_factory=list)
    ocr: list[str] = field(default_factory=list)
    colourfulness: float | None = None
    white_border: float | None = None
    faces: int = 0  # faces the detector found: people, counted, and nothing else said of them
    text_area_share: float | None = None  # share of the image covered by OCR'd text
    flat_share: float | None = None  # share of flat pixels (recaption.stages.image.flat_share)


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
    contradicted: str = ""  # the alt-text set aside because the classifier is sure it is wrong

    @property
    def says_anything(self) -> bool:
        return bool(self.subject or self.tags or self.hedged or self.ocr)


def is_document(ev: Evidence) -> bool:
    """A grey image mostly covered by text: a scanned page, by the image's own statistics."""
    grey = ev.colourfulness is not None and ev.colourfulness < GREY_COLOURFULNESS
    return grey and (ev.text_area_share or 0) >= DOCUMENT_TEXT_SHARE


def choose_prompt(ev: Evidence) -> str:
    for pattern, prompt in MEDIUM_PROMPTS:
        if pattern.search(ev.alt_text):
            return prompt
    grey = ev.colourfulness is not None and ev.colourfulness < GREY_COLOURFULNESS
    if is_document(ev):
        return SCAN_PROMPT
    flat = (ev.flat_share or 0) >= FLAT_GRAPHIC and GRAPHIC_WHITE_BORDER <= (ev.white_border or 0) < PRODUCT_WHITE_BORDER
    if flat and not grey and ev.colourfulness is not None and not ev.faces:
        return "an illustration of"
    if grey:
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


def _label_ids(labels: list[Label]) -> tuple[dict[int, float], dict[int, Label]]:
    """Probabilities by class id; a label with no class gets an id of its own below zero,
    so that it stands alone, outside the hierarchy."""
    by_id = {(lb.index if lb.index is not None else -1 - k): lb for k, lb in enumerate(labels)}
    return {i: lb.p for i, lb in by_id.items()}, by_id


def _said(concept: Concept, by_id: dict[int, Label], words: set[str]) -> bool:
    """Whether the alt-text already says ``concept``: its own name, any label under it, or a
    basic concept above it ("a cup of coffee" says espresso, "my dog" says German Shepherd)."""
    if _words(concept.name) <= words or any(mentioned(by_id[i], words) for i in concept.classes & by_id.keys()):
        return True
    return any(n.level != "general" and concept.classes <= n.classes and _words(n.name) <= words for n in hierarchy())


def _short(hedged: Concept, stated: Concept) -> str:
    """ "German Shepherd Dog" under "dog" is "German Shepherd"; "tabby cat" under "cat" is "tabby"."""
    head = stated.name.split()[-1].lower()
    words = hedged.name.split()
    return " ".join(words[:-1]) if len(words) > 1 and words[-1].lower() == head else hedged.name


@lru_cache(maxsize=1)
def _knowable_words() -> frozenset[str]:
    """Words for concepts the classifier can see: the hierarchy's names and the kinds' words."""

    names = {n.name for n in hierarchy() if n.level in ("basic", "kind") and " " not in n.name}
    return frozenset(names | {w for words in KIND_WORDS.values() for w in words.split()})


CONTRADICTED_MASS = 0.05  # the classifier's mass on what the alt-text names, below which it disagrees


def contradicts(alt_text: str, found: list[Claim], by_id: dict[int, Label], confident: float) -> bool:
    """The classifier is sure of something the alt-text does not say, and gives nothing of what
    the alt-text names that it could see ("a tabby cat" on a photo of a tripod)."""
    if not alt_text or not any(c.stated is not None and c.stated.p >= confident for c in found):
        return False
    if any(i < 0 for i in by_id):  # labels with no class cannot be placed under what the alt-text names
        return False
    words = _words(alt_text)
    seeable = words & _knowable_words()
    if not seeable:
        return False
    nodes = [n for n in hierarchy() if n.name in seeable]
    kinds = kinds_named(words)
    named_mass = sum(lb.p for i, lb in by_id.items() if mentioned(lb, words) or lb.noun in kinds or any(i in n.classes for n in nodes))
    return named_mass < CONTRADICTED_MASS and not any(_said(c.stated, by_id, words) for c in found if c.stated)


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
    probs, by_id = _label_ids(ev.labels)
    names = {i: lb.name for i, lb in by_id.items()}
    found = claims(probs, names, confident, hedge_min, limit=max_tags)
    contradicted = ""
    if contradicts(ev.alt_text, found, by_id, confident):
        contradicted, ev = ev.alt_text, replace(ev, alt_text="")
    prompt = choose_prompt(ev)
    document = is_document(ev)
    if document:  # objects the classifier finds in a page of text are not there
        found = []
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
    for claim in found:
        said = [c for c in (claim.stated, claim.hedged) if c is not None and not _said(c, by_id, words)]
        heads = {_head(c, by_id) for c in said}
        if not said or heads & nouns:
            continue
        nouns |= heads
        if claim.stated is not None and claim.stated in said:
            sure.append(_article(claim.stated.name))
        if claim.hedged is not None and claim.hedged in said:
            name = _short(claim.hedged, claim.stated) if claim.stated is not None and claim.stated in said else claim.hedged.name
            maybe.append(_article(name))
    if not subject and ev.faces:  # no alt-text: the people the detector found come first
        subject = people_phrase(ev.faces)
    if not subject and document:
        subject = "a page"
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
    return ComposedCaption(text, prompt, sure, maybe, ocr_used, subject, contradicted)


def _head(concept: Concept, by_id: dict[int, Label]) -> str:
    """A concept's head noun: a label's own (breeds say "dog"), else the last word of its name."""
    if concept.level == "class":
        (i,) = concept.classes
        return by_id[i].noun
    return concept.name.split()[-1].lower()
