"""Parquet: a file or a folder of files; images as a binary column or as paths.

Columns are found by name (``image_id``/``key``, ``image``/``jpg`` bytes or ``image_path``,
``texts``/``caption``/``text``) or mapped with ``--id-field``, ``--image-field``,
``--text-field``. Shards are runs of row groups of about ``shard_size`` rows, read one
row group at a time so that memory stays flat.

Output: ``part-NNNNN.parquet`` whose ``image`` column is Hugging Face's Image feature,
``{bytes, path}``: the bytes where the image travelled as bytes (or ``--embed-images`` asked
for every image's bytes), else the file's path (also in ``image_path``). ``captions``,
``scores``, ``meta`` and ``origin`` are typed nested columns (``nested_columns``), one schema
for all files of a run. The schema carries the ``huggingface`` features metadata, so
``datasets.load_dataset("parquet", ...)`` decodes ``image`` as images and the nested fields
as dicts and lists, with no cast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recaption.imaging import is_url, read_image_bytes
from recaption.io.atomic import atomic_path
from recaption.io.base import (
    READ_STAGE,
    InputError,
    InputShard,
    Reader,
    Writer,
    broken_pair,
    register_reader,
    register_writer,
    shard_name,
)
from recaption.io.nested_columns import (
    NULL,
    arrow_type,
    conform,
    hf_feature,
    json_paths,
    merge,
    read_sketches,
    restore,
    settle,
    sketch_of,
    typed_metadata,
)
from recaption.io.records import pair_from_record, record_from_pair
from recaption.io.safejson import RecordProblem, dumps
from recaption.limits import MAX_IMAGE_BYTES, MAX_RECORD_BYTES
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
        sketches = read_sketches(pf.schema_arrow.metadata)
        groups = shard.spec["row_groups"]
        row = sum(pf.metadata.row_group(g).num_rows for g in range(groups[0])) if groups else 0
        for g in groups:
            try:
                table = pf.read_row_group(g)
            except (pa.ArrowException, OSError, ValueError) as exc:
                # A damaged row group costs its own rows, each accounted for, not the run.
                n = pf.metadata.row_group(g).num_rows
                for i in range(n):
                    origin = {"file": str(path), "row": row + i, "row_group": g}
                    yield broken_pair(f"{path.stem}:{row + i}", "corrupt_row_group", f"row group {g} of {path.name}: {str(exc)[:200]}", origin)
                row += n
                continue
            for record in plain_records(table, sketches):
                origin = {"file": str(path), "row": row}
                if isinstance(record, RecordProblem) and record.rest is not None:  # a column that would not convert: the rest of the row, rejected
                    pair = pair_from_record(record.rest, self.options, origin, path.parent, f"{path.stem}:{row}")
                    if pair.reject is None:
                        pair.reject_with(READ_STAGE, record.reason, str(record))
                    yield pair
                elif isinstance(record, Exception):
                    reason = record.reason if isinstance(record, RecordProblem) else "malformed_record"
                    detail = str(record) if isinstance(record, RecordProblem) else f"{type(record).__name__}: {record}"
                    yield broken_pair(f"{path.stem}:{row}", reason, detail[:300], origin)
                else:
                    yield pair_from_record(record, self.options, origin, path.parent, f"{path.stem}:{row}")
                row += 1


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image storage
NESTED = ("captions", "scores", "meta", "origin")  # free-form fields: typed per file, JSON while staged


def with_hf_features(schema: pa.Schema, images: tuple[str, ...] = ("image",)) -> pa.Schema:
    """``schema`` with the ``huggingface`` metadata that names its features: ``images`` columns
    are Image features, the rest follow their Arrow types. What datasets reads to decode."""
    features = {field.name: {"_type": "Image"} if field.name in images else hf_feature(field.type) for field in schema}
    return schema.with_metadata({**(schema.metadata or {}), b"huggingface": json.dumps({"info": {"features": features}}).encode()})


_FIELDS = [
    ("image_id", pa.string()),
    ("image", IMAGE_STRUCT),
    ("image_ext", pa.string()),
    ("image_path", pa.string()),
    ("texts", pa.list_(pa.string())),
    ("caption", pa.string()),
    *((name, pa.string()) for name in NESTED),
    ("extras", pa.list_(pa.struct([("ext", pa.string()), ("bytes", pa.binary())]))),  # carried WebDataset members
]
# The staging schema: nested fields as JSON text, before a shard's shape is known.
SCHEMA = with_hf_features(pa.schema(_FIELDS))


def typed_schema(sketches: dict[str, tuple]) -> pa.Schema:
    """The output schema for a file whose nested fields have these (raw) sketches."""
    types = {name: arrow_type(settle(sketches[name])) for name in NESTED}
    fields = [(name, types.get(name, kind)) for name, kind in _FIELDS]
    return with_hf_features(pa.schema(fields, metadata=typed_metadata(sketches)))


@register_writer
class ParquetWriter(Writer):
    """Kept pairs as Parquet, the nested fields typed columns (made in a second pass over the
    shard); ``embed_images`` stores every image's bytes (a dataset that travels without its
    image folder)."""

    format = "parquet"
    suffix = ".parquet"
    row_group_size = 256  # rows held in memory before a row group is written

    def __init__(self, out_dir: str | Path, embed_images: bool = False) -> None:
        super().__init__(out_dir)
        self.embed_images = embed_images

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        with atomic_path(self.target(shard)) as tmp:
            staging = tmp.with_name(tmp.name + ".staging.tmp")
            sketches = dict.fromkeys(NESTED, NULL)
            try:
                with _rows_to(staging, SCHEMA, self.row_group_size) as put:

                    def add(pair: Pair) -> None:
                        row = parquet_row(pair, self.embed_images)
                        found = {name: sketch_of(row[name]) for name in NESTED}  # before anything is kept
                        put({**row, **{name: dumps(row[name]) for name in NESTED}})
                        for name in NESTED:
                            sketches[name] = merge(sketches[name], found[name])

                    yield add
                _retype(staging, tmp, sketches, None)
            finally:
                staging.unlink(missing_ok=True)

    def finish_dataset(self) -> list[str]:
        """Bring every file to one schema (the merge of their sketches): tools that take the
        first file's schema for all of them (datasets) then read them all."""
        files = sorted(self.out_dir.glob(f"*{self.suffix}"))
        found = {f: read_sketches(pq.read_schema(f).metadata) for f in files}
        union = dict.fromkeys(NESTED, NULL)
        for sketches in found.values():
            for name in NESTED:
                union[name] = merge(union[name], sketches.get(name, NULL))
        for f, sketches in found.items():
            if sketches and any(settle(sketches.get(n, NULL)) != settle(union[n]) for n in NESTED):
                with atomic_path(f) as tmp:
                    _retype(f, tmp, union, sketches)
        return []


@contextmanager
def _rows_to(path: Path, schema: pa.Schema, group: int) -> Iterator[Callable[[dict], None]]:
    """A Parquet file written ``group`` rows at a time (memory stays flat)."""
    rows: list[dict] = []
    with pq.ParquetWriter(path, schema) as out:

        def flush() -> None:
            out.write_table(pa.Table.from_pylist(rows, schema=schema))
            rows.clear()

        def put(row: dict) -> None:
            rows.append(row)
            if len(rows) >= group:
                flush()

        yield put
        if rows:
            flush()


def _retype(source: Path, target: Path, sketches: dict[str, tuple], source_sketches: dict[str, tuple] | None) -> None:
    """Rewrite ``source`` into ``target`` with the nested columns typed by ``sketches``; the
    source's nested columns are JSON text (``source_sketches`` None) or typed by those."""
    schema = typed_schema(sketches)
    settled = {name: settle(sketches[name]) for name in NESTED}
    pf = pq.ParquetFile(source)
    with pq.ParquetWriter(target, schema) as out:
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g)
            columns = []
            for field in schema:
                if field.name not in NESTED:
                    columns.append(table.column(field.name))
                    continue
                values = table.column(field.name).to_pylist()
                if source_sketches is None:
                    values = [None if v is None else json.loads(v) for v in values]
                else:
                    paths = json_paths(settle(source_sketches.get(field.name, NULL)))
                    values = [restore(v, paths) for v in values]
                columns.append(pa.array([conform(v, settled[field.name]) for v in values], type=field.type))
            out.write_table(pa.Table.from_arrays(columns, schema=schema))


def plain_records(table: pa.Table, sketches: dict[str, tuple]) -> Iterator[dict | Exception]:
    """A row group's records as the writer was given them: typed nested columns restored (JSON
    subtrees parsed, the nulls of absent keys dropped). A row that cannot be restored comes back
    as the exception, for the caller to reject."""
    paths = {name: json_paths(settle(s)) for name, s in sketches.items() if name in NESTED}
    for record in _rows(table):
        if isinstance(record, Exception):
            yield record
            continue
        try:
            for name, p in paths.items():
                if name in record:
                    record[name] = restore(record[name], p)
            size = text_size(record)
            if size > MAX_RECORD_BYTES:  # as a JSON line of ours would be refused: a record we could not read back
                raise RecordProblem("too_large", f"the row's fields take {size} bytes as JSON > {MAX_RECORD_BYTES}")
        except Exception as exc:  # noqa: BLE001 - one row's damage is that row's reject
            yield exc
            continue
        yield record


def _rows(table: pa.Table) -> Iterator[dict | Exception]:
    """The rows of a row group as dicts, column by column; a column that will not convert
    (a struct whose field names repeat: ``Foo``, ``foo``, ``foo``) costs the rows it fails on,
    each as the exception, not the file."""
    columns: dict[str, list] = {}
    failed: dict[str, Exception] = {}
    for name, column in zip(table.column_names, table.columns):
        try:
            columns[name] = column.to_pylist()
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            failed[name] = exc
    for i in range(table.num_rows):
        record = {name: values[i] for name, values in columns.items()}
        if failed:
            name, exc = next(iter(failed.items()))
            # What did convert goes with the reject: the row's id, texts and image.
            yield RecordProblem("unreadable_column", f"column {name!r}: {type(exc).__name__}: {exc}"[:300], rest=record)
            continue
        yield record


def text_size(record: dict) -> int:
    """About the bytes a record's fields take as a JSON line, image bytes left out."""
    def holds_bytes(value: object) -> bool:
        if isinstance(value, (bytes, bytearray)):
            return True
        if isinstance(value, dict):
            return any(isinstance(v, (bytes, bytearray)) for v in value.values())
        return isinstance(value, list) and any(isinstance(v, dict) and holds_bytes(v) for v in value[:1])

    return len(json.dumps({k: v for k, v in record.items() if not holds_bytes(v)}, default=str, ensure_ascii=False).encode("utf-8", "replace"))


def parquet_row(pair: Pair, embed_images: bool = False) -> dict:
    has_bytes = isinstance(pair.image, (bytes, bytearray))
    rec = record_from_pair(pair, image_path=None if has_bytes else pair.image, holds_extras=True)
    rec["extras"] = [{"ext": ext, "bytes": data} for ext, data in pair.extras.items()] or None
    local = isinstance(pair.image, str) and not is_url(pair.image)  # a URL is no file datasets can open
    if has_bytes:
        rec["image"] = {"bytes": bytes(pair.image), "path": None}  # type: ignore[arg-type]
    elif local and embed_images:
        rec["image"] = {"bytes": read_image_bytes(pair.image, MAX_IMAGE_BYTES)[0], "path": Path(pair.image).name}  # type: ignore[arg-type]
    else:
        rec["image"] = {"bytes": None, "path": pair.image if local else None}
    rec["image_ext"] = pair.image_ext
    return {name: rec.get(name) for name in SCHEMA.names}
