"""``WebDatasetPairs``: an ``IterableDataset`` over WebDataset tar shards (recaption's own
output or any ``KEY.jpg`` + ``KEY.txt``/``KEY.json`` shards).

Shards are split across distributed ranks and DataLoader workers (shard i goes to the reader
number ``i % (world_size * workers)``), so each sample is read once per epoch across the whole
job; with ``shuffle`` the shard order is a seeded permutation per epoch. Tars are read as
streams by the same reader as ``recaption run`` (hostile members are refused); a broken
sample or image yields ``None``, which ``skip_broken_collate`` drops and counts.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recaption.io.base import InputShard, ReaderOptions
from recaption.io.webdataset import WebDatasetReader
from recaption.loaders.pairs import decode_side_for, encode_item
from recaption.loaders.policy import CaptionPolicy


def rank_and_world() -> tuple[int, int]:
    """torch.distributed's rank and world size when it is set up, else RANK / WORLD_SIZE."""
    try:
        import torch.distributed as dist  # noqa: PLC0415 - torch, loaded only where it is used

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _base() -> type:
    try:
        from torch.utils.data import IterableDataset  # noqa: PLC0415 - torch, loaded only where it is used

        return IterableDataset
    except ImportError:  # torch is a core dependency; this only keeps the import light in tools
        return object


class WebDatasetPairs(_base()):  # type: ignore[misc]
    def __init__(self, shards: str | list[str | Path], processor: Any = None, policy: CaptionPolicy | None = None,
                 max_length: int = 77, shuffle: bool = False, seed: int = 0, rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        if isinstance(shards, (str, Path)):
            found = sorted(glob.glob(str(Path(shards) / "*.tar"))) if Path(shards).is_dir() else sorted(glob.glob(str(shards)))
        else:
            found = [str(s) for s in shards]
        if not found:
            raise ValueError(f"no .tar shards in {shards}")
        self.shards = found
        self.processor, self.policy, self.max_length = processor, policy or CaptionPolicy(seed=seed), max_length
        self.decode_side = decode_side_for(processor)
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.policy.set_epoch(epoch)

    def my_shards(self) -> list[tuple[int, str]]:
        """(shard number, path) for this rank and DataLoader worker."""
        from torch.utils.data import get_worker_info  # noqa: PLC0415 - torch, loaded only where it is used

        rank, world = rank_and_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        order = list(range(len(self.shards)))
        if self.shuffle:
            order = [int(i) for i in np.random.default_rng([self.seed, self.policy.epoch]).permutation(len(self.shards))]
        reader_id, readers = rank * workers + worker, world * workers
        return [(i, self.shards[i]) for n, i in enumerate(order) if n % readers == reader_id]

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        for number, path in self.my_shards():
            reader = WebDatasetReader(path, ReaderOptions())
            for k, pair in enumerate(reader.pairs(InputShard(number, Path(path).stem, {"file": path}))):
                # The caption draw is keyed by shard and position, stable across workers and ranks.
                yield encode_item(pair, number * 1_000_003 + k, self.processor, self.policy, self.max_length, self.decode_side)
