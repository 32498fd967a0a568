"""PyTorch datasets for training on recaption's output: a map-style dataset over JSONL or
Parquet, an iterable one over WebDataset shards, one caption policy for both, and a collate
that skips broken samples and counts them.

The datasets import torch; they load when first named (``from recaption.loaders import
ImageTextPairDataset``), so that what needs no torch here (the caption policy, ``exports``)
keeps it off the command line's start-up."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CaptionPolicy": "recaption.loaders.policy",
    "ImageTextPairDataset": "recaption.loaders.pairs",
    "WebDatasetPairs": "recaption.loaders.webdataset",
    "skip_broken_collate": "recaption.loaders.collate",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'recaption.loaders' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
