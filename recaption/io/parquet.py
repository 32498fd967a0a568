"""Parquet: a file or a folder of files; images as a binary column or as paths.

Columns are found by name (``image_id``/``key``, ``image``/``jpg`` bytes or ``image_path``,
``texts``/``caption``/``text``) or mapped with ``--id-field``, ``--image-field``,
``--text-field``. Shards are runs of row groups of about ``shard_size`` rows, read one
row group at a time so that memory stays flat.

Output: ``part-NNNNN.parquet`` whose ``image`` column is Hugging Face's Image feature,
``{bytes, path}``: the bytes where the image travelled as bytes, else the file's path (also in
``image_path``); nested fields as JSON strings so every row has one schema. The schema carries
the ``huggingface`` features metadata, so ``datasets.load_dataset("parquet", ...)`` decodes
``image`` as images with no cast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recaption.io.base import (
    InputError,
    InputShard,
    Reader,
    Writer,
    atomic_path,
    broken_pair,
    register_reader,
    register_writer,
    shard_name,
)
from recaption.io.records import pair_from_record, record_from_pair
from recaption.record import Pair


@register_reader
class ParquetReader(Reader):
    format = "parquet"

    def plan(self) -> list[InputShard]:
        shards: list[InputShard] = []
        for path in self.input_files("*.parquet", ".parquet files"):
            try:
                meta = pq.ParquetFile(path).metadata
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{path} is not a readable Parquet file: {exc}") from exc
            groups: list[int] = []
            rows = 0
            for g in range(meta.num_row_groups):
                groups.append(g)
                rows += meta.row_group(g).num_rows
                if rows >= self.options.shard_size:
                    shards.append(InputShard(len(shards), shard_name(len(shards)), {"file": str(path), "row_groups": groups, "records": rows}))
                    groups, rows = [], 0
            if groups:
                shards.append(InputShard(len(shards), shard_name(len(shards)), {"file": str(path), "row_groups": groups, "records": rows}))
        return shards

    def read(self, shard: InputShard) -> Iterator[Pair]:
        path = Path(shard.spec["file"])
        pf = pq.ParquetFile(path)
        groups = shard.spec["row_groups"]
        row = sum(pf.metadata.row_group(g).num_rows for g in range(groups[0])) if groups else 0
        for g in groups:
            try:
                records = pf.read_row_group(g).to_pylist()
            except (pa.ArrowException, OSError, ValueError) as exc:
                # A damaged row group costs its own rows, each accounted for, not the run.
                n = pf.metadata.row_group(g).num_rows
                for i in range(n):
                    origin = {"file": str(path), "row": row + i, "row_group": g}
                    yield broken_pair(f"{path.stem}:{row + i}", "corrupt_row_group", f"row group {g} of {path.name}: {str(exc)[:200]}", origin)
                row += n
                continue
            for record in records:
                origin = {"file": str(path), "row": row}
                yield pair_from_record(record, self.options, origin, path.parent, f"{path.stem}:{row}")
                row += 1


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image storage


def with_hf_features(schema: pa.Schema, images: tuple[str, ...] = ("image",)) -> pa.Schema:
    """``schema`` with the ``huggingface`` metadata that names its features: ``images`` columns
    are Image features, strings Values, lists of strings Lists. What datasets reads to decode."""

    def feature(field: pa.Field) -> dict:
        if field.name in images:
            return {"_type": "Image"}
        if pa.types.is_list(field.type):
            return {"feature": {"dtype": str(field.type.value_type), "_type": "Value"}, "_type": "List"}
        return {"dtype": str(field.type), "_type": "Value"}

    features = {field.name: feature(field) for field in schema}
    return schema.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})


SCHEMA = with_hf_features(
    pa.schema(
        [
            ("image_id", pa.string()),
            ("image", IMAGE_STRUCT),
            ("image_ext", pa.string()),
            ("image_path", pa.string()),
            ("texts", pa.list_(pa.string())),
            ("caption", pa.string()),
            ("captions", pa.string()),
            ("scores", pa.string()),
            ("meta", pa.string()),
            ("origin", pa.string()),
        ]
    )
)


@register_writer
class ParquetWriter(Writer):
    format = "parquet"
    suffix = ".parquet"
    row_group_size = 256  # rows held in memory before a row group is written

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        rows: list[dict] = []
        with atomic_path(self.target(shard)) as tmp:
            with pq.ParquetWriter(tmp, SCHEMA) as out:

                def flush() -> None:
                    out.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
                    rows.clear()

                def add(pair: Pair) -> None:
                    rows.append(parquet_row(pair))
                    if len(rows) >= self.row_group_size:
                        flush()

                yield add
                if rows:
                    flush()


def parquet_row(pair: Pair) -> dict:
    has_bytes = isinstance(pair.image, (bytes, bytearray))
    rec = record_from_pair(pair, image_path=None if has_bytes else pair.image, nested_as_json=True)
    local = isinstance(pair.image, str) and "://" not in pair.image  # a URL is no file datasets can open
    rec["image"] = {"bytes": bytes(pair.image), "path": None} if has_bytes else {"bytes": None, "path": pair.image if local else None}  # type: ignore[arg-type]
    rec["image_ext"] = pair.image_ext
    return {name: rec.get(name) for name in SCHEMA.names}
