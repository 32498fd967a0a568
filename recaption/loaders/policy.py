"""Which caption a training consumer sees for a pair.

- ``original``: the alt-text, cleaned and checked for sensitive attributes as every caption
  is (never as it came: URLs, @mentions, entities, phone numbers and names stay out of
  training); a pair whose alt-text left nothing gets its selected caption;
- ``selected``: the caption recaption selected (else the alt-text);
- ``mix``: the selected caption with probability ``p``, else the original (the Altogether
  paper trains CLIP on a mix and text-to-image models on re-aligned captions only).

The draw is a pure function of (seed, epoch, pair index): the same epoch sees the same
captions on every run, worker and rank, and another epoch another mix. Call ``set_epoch``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from recaption.io.records import cleaned_alt_text, training_text
from recaption.record import Pair
from recaption.text.clean import AltTextRules
from recaption.text.sensitive import SensitiveAttributeFilter

MODES = ("original", "selected", "mix")


@dataclass
class CaptionPolicy:
    mode: str = "selected"
    p: float = 1.0  # with mode "mix": the share of selected (re-aligned) captions
    seed: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"caption policy mode must be one of {MODES}, not {self.mode!r}")
        if not 0 <= self.p <= 1:
            raise ValueError("caption policy p must be between 0 and 1")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def uniform(self, index: int) -> float:
        """A number in [0, 1) fixed by (seed, epoch, index)."""
        digest = hashlib.blake2b(f"{self.seed}:{self.epoch}:{index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def caption(self, pair: Pair, index: int) -> str:
        if not pair.captions:  # a dataset no recaption run has seen: clean it here, as a run would
            selected = original = clean_for_training(pair.alt_text)
        else:
            selected = training_text(pair)
            original = cleaned_alt_text(pair) or selected
        if self.mode == "original":
            return original
        if self.mode == "selected":
            return selected
        return selected if self.uniform(index) < self.p else original


@lru_cache(maxsize=1)
def _text_rules() -> tuple[AltTextRules, SensitiveAttributeFilter]:
    return AltTextRules(), SensitiveAttributeFilter()


def clean_for_training(text: str) -> str:
    """The cleaning rules and the sensitive-attribute check (without the names model) on a raw text."""
    rules, sensitive = _text_rules()
    return sensitive.check(rules.clean(text).text).text
