"""Which caption a training consumer sees for a pair.

- ``original``: the first original text (the alt-text as it came);
- ``selected``: the caption recaption selected (else the alt-text);
- ``mix``: the selected caption with probability ``p``, else the original (the Altogether
  paper trains CLIP on a mix and text-to-image models on re-aligned captions only).

The draw is a pure function of (seed, epoch, pair index): the same epoch sees the same
captions on every run, worker and rank, and another epoch another mix. Call ``set_epoch``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from recaption.io.records import training_text
from recaption.record import Pair

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
        original = pair.texts[0] if pair.texts else training_text(pair)
        if self.mode == "original":
            return original
        selected = training_text(pair) or original
        if self.mode == "selected":
            return selected
        return selected if self.uniform(index) < self.p else original
