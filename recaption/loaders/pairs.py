"""``ImageTextPairDataset``: a map-style PyTorch dataset over recaption's JSONL or Parquet
output (or any JSONL of the seed schema), for training consumers.

The file is never loaded whole: a JSONL file is indexed once by the byte offset of each line
(8 bytes a record) and a line is read when its item is asked for; a Parquet file is indexed
by row group and one row group at a time is read (the last one is kept, so a sequential pass
reads each once). File handles open lazily in each DataLoader worker.

Each item is the processor's output for (image, caption) with the text padded to 77 tokens
(``padding="max_length"``), the seed's loader, or ``{"image", "text", "image_id"}`` without a
processor, the image a uint8 tensor of shape (H, W, 3). An item whose record or image is broken is ``None``: ``skip_broken_collate``
drops it and counts it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from recaption.imaging import input_side, load_rgb_array
from recaption.io.base import ReaderOptions, broken_pair
from recaption.io.nested_columns import read_sketches
from recaption.io.parquet import plain_records
from recaption.io.records import pair_from_record
from recaption.loaders.policy import CaptionPolicy
from recaption.record import Pair


def decode_side_for(processor: Any) -> int | None:
    """With a processor, JPEGs are decoded at the smallest DCT scale that still covers its
    input (several times faster than a full decode); without one, at full size."""

    image_processor = getattr(processor, "image_processor", None)
    return input_side(image_processor) if image_processor is not None else None


def encode_item(pair: Pair, index: int, processor: Any, policy: CaptionPolicy, max_length: int, decode_side: int | None = None) -> dict[str, Any] | None:
    """Decode the image, choose the caption, run the processor; ``None`` when it cannot."""

    if pair.reject is not None or pair.image is None:
        return None
    try:
        # An array straight from libjpeg-turbo; in a DataLoader worker a uint8 tensor is handed
        # over in shared memory, where a PIL image would be pickled and copied. For a processor,
        # at the smallest of libjpeg's n/8 scales that still covers its input side.
        pixels = load_rgb_array(pair.image, decode_side, any_scale=True)  # type: ignore[arg-type]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    text = policy.caption(pair, index)
    if processor is None:
        import torch  # noqa: PLC0415 - torch, loaded only where it is used

        return {"image": torch.from_numpy(pixels), "text": text, "image_id": pair.image_id}
    inputs = processor(images=Image.fromarray(pixels), text=text, return_tensors="pt", padding="max_length", truncation=True, max_length=max_length)
    return {k: v.squeeze(0) for k, v in inputs.items()}


class ImageTextPairDataset:
    """``torch.utils.data.Dataset``-compatible (``__len__`` + ``__getitem__``)."""

    def __init__(self, path: str | Path, image_root: str | Path | None = None, processor: Any = None,
                 policy: CaptionPolicy | None = None, max_length: int = 77) -> None:
        self.path = Path(path)
        self.options = ReaderOptions(image_root=str(image_root) if image_root else None)
        self.processor, self.policy, self.max_length = processor, policy or CaptionPolicy(), max_length
        self.decode_side = decode_side_for(processor)
        self.parquet = self.path.suffix.lower() == ".parquet"
        self._handle: Any = None
        self._group: tuple[int, list[dict]] | None = None
        if self.parquet:

            meta = pq.ParquetFile(self.path).metadata
            self.group_starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
            self.length = int(self.group_starts[-1])
        else:
            self.offsets = self._index_lines()
            self.length = len(self.offsets)

    def _index_lines(self) -> np.ndarray:
        offsets, at = [], 0
        with open(self.path, "rb") as fh:
            for line in fh:
                if line.strip():
                    offsets.append(at)
                at += len(line)
        return np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_group"] = None, None  # each worker opens its own
        return state

    def record(self, index: int) -> dict[str, Any]:
        if self.parquet:
            group = int(np.searchsorted(self.group_starts, index, side="right") - 1)
            if self._group is None or self._group[0] != group:


                if self._handle is None:
                    self._handle = pq.ParquetFile(self.path)
                    self._sketches = read_sketches(self._handle.schema_arrow.metadata)
                self._group = (group, list(plain_records(self._handle.read_row_group(group), self._sketches)))
            return self._group[1][index - int(self.group_starts[group])]
        if self._handle is None:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open for the worker's life
        self._handle.seek(int(self.offsets[index]))
        return json.loads(self._handle.readline())

    def pair(self, index: int) -> Pair:
        try:
            record = self.record(index)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _broken(index, str(exc))
        if isinstance(record, Exception):  # a Parquet row whose nested columns cannot be restored
            return _broken(index, f"{type(record).__name__}: {record}")
        return pair_from_record(record, self.options, {}, self.path.parent, f"{self.path.stem}:{index}")

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return encode_item(self.pair(index), index, self.processor, self.policy, self.max_length, self.decode_side)


def _broken(index: int, detail: str) -> Pair:
    return broken_pair(f"record-{index}", "malformed_json", detail[:200], {})
