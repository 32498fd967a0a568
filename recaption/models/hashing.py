"""Hashes that name a model's weights, so stored scores say exactly what made them."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]
