"""What every captioner shares, whichever model or backend writes the captions: the decoding
settings (``Sampling``), the protocol a backend implements (``Captioner``), the seed each image
draws from, and the error that says the backend itself, not a record, failed."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class Sampling:
    """How a captioner decodes, for every captioner (the VLMs and the re-aligning captioner)."""

    n: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int | None = 60  # None: the model's own limit (the re-aligning captioner's caption length)
    seed: int = 0

    def check(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be 0 (greedy) or more")
        if self.n > 1 and self.temperature <= 0:
            raise ValueError("n > 1 candidates need sampling: set temperature > 0 (greedy decoding gives one answer)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


class Captioner(Protocol):
    family: str
    model_hash: str

    def format_prompt(self, instruction: str) -> str: ...

    def generate(self, images: list[Image.Image], prompts: list[str], sampling: Sampling) -> list[list[str]]: ...


def request_seed(seed: int, image: Image.Image) -> int:
    """A seed per image: the stage's seed mixed with the image's pixels, so that two images
    never draw from one random stream and an image gets the same seed in any batch."""
    return zlib.crc32(image.tobytes(), zlib.crc32(repr((seed, image.size, image.mode)).encode())) & 0x7FFFFFFF


class ServiceUnavailable(Exception):
    """The server failed in a way that is not any one record's fault: the run stops."""
