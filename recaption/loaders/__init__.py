"""PyTorch datasets for training on recaption's output: a map-style dataset over JSONL or
Parquet, an iterable one over WebDataset shards, one caption policy for both, and a collate
that skips broken samples and counts them."""

from recaption.loaders.collate import skip_broken_collate
from recaption.loaders.pairs import ImageTextPairDataset
from recaption.loaders.policy import CaptionPolicy
from recaption.loaders.webdataset import WebDatasetPairs

__all__ = ["CaptionPolicy", "ImageTextPairDataset", "WebDatasetPairs", "skip_broken_collate"]
