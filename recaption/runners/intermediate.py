"""The files between two segments: each kept Pair as written by ``Pair.to_dict`` (JSON), its
image bytes and its carried WebDataset members beside, in Parquet row groups.

Not the Parquet output format: intermediates are recaption's own records on their way to the
next pass, so they go through the data model's own ``to_dict`` / ``from_dict`` and never
through the adapter for foreign input (which guesses fields and moves unknown ones to meta).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recaption.io.atomic import atomic_path
from recaption.io.base import Writer
from recaption.io.safejson import dumps
from recaption.record import Pair

SCHEMA = pa.schema([
    ("pair", pa.string()),
    ("image", pa.binary()),
    ("extras", pa.list_(pa.struct([("ext", pa.string()), ("bytes", pa.binary())]))),
])
ROW_GROUP = 256  # rows held in memory before a row group is written


class IntermediateWriter(Writer):
    suffix = ".parquet"

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        rows: list[dict] = []
        with atomic_path(self.target(shard)) as tmp, pq.ParquetWriter(tmp, SCHEMA) as out:

            def flush() -> None:
                out.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
                rows.clear()

            def add(pair: Pair) -> None:
                image = bytes(pair.image) if isinstance(pair.image, (bytes, bytearray)) else None
                extras = [{"ext": ext, "bytes": data} for ext, data in pair.extras.items()] or None
                rows.append({"pair": dumps(pair.to_dict()), "image": image, "extras": extras})
                if len(rows) >= ROW_GROUP:
                    flush()

            yield add
            if rows:
                flush()


def read_intermediate(path: Path) -> Iterator[Pair]:
    """The Pairs an earlier segment wrote, in order, a row group at a time."""
    pf = pq.ParquetFile(path)
    for g in range(pf.metadata.num_row_groups):
        for row in pf.read_row_group(g).to_pylist():
            pair = Pair.from_dict(json.loads(row["pair"]))
            if row["image"] is not None:
                pair.image = row["image"]
            pair.extras = {item["ext"]: item["bytes"] for item in row["extras"] or []}
            yield pair
