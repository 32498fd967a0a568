"""Fuzzing the surfaces added since the first hostile-input work: Parquet structs, tar members
with any bytes (header sizes that lie included), imagefolder metadata, what a caption server
answers, and reference index files. Nothing may raise but the one error a surface documents;
every record comes out as a Pair, kept or rejected with a reason."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recaption.dedup.index import INDEX_KEY, ReferenceIndexError, read_index
from recaption.io.base import InputShard, ReaderOptions
from recaption.io.imagefolder import ImageFolderReader
from recaption.io.parquet import ParquetReader
from recaption.io.webdataset import WebDatasetReader, loader_unfit
from recaption.limits import MAX_TEXT_CHARS
from recaption.models.openai_server import _error_text, choice_texts
from tests.conftest import encode, noise_image, with_lying_header

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IMAGE = encode(noise_image(0, (16, 12)))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def struct_columns(draw: st.DrawFn, rows: int) -> pa.Array:
    """A struct column whose field names may repeat (Foo, foo, foo) or be empty, of mixed types."""
    names = draw(st.lists(st.sampled_from(["Foo", "foo", "", "a.b", "meta"]), min_size=1, max_size=4))
    children = []
    for _ in names:
        kind = draw(st.sampled_from(["int", "str", "list", "null"]))
        if kind == "int":
            children.append(pa.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), min_size=rows, max_size=rows)), pa.int64()))
        elif kind == "str":
            children.append(pa.array(draw(st.lists(st.text(max_size=8) | st.none(), min_size=rows, max_size=rows)), pa.string()))
        elif kind == "list":
            children.append(pa.array(draw(st.lists(st.lists(st.integers(0, 9), max_size=3) | st.none(), min_size=rows, max_size=rows)), pa.list_(pa.int64())))
        else:
            children.append(pa.nulls(rows))
    return pa.StructArray.from_arrays(children, names=names)


@FUZZ
@given(st.data(), st.integers(min_value=1, max_value=4), st.sampled_from(["meta", "scores", "captions", "origin", "extra"]))
def test_any_parquet_struct_becomes_one_pair_per_row(data: st.DataObject, rows: int, column: str) -> None:
    table = pa.table({"image": [IMAGE] * rows, "texts": [["a kite"]] * rows, column: data.draw(struct_columns(rows))})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.parquet"
        pq.write_table(table, path)
        reader = ParquetReader(path, ReaderOptions())
        pairs = [p for shard in reader.plan() for p in reader.pairs(shard)]
    assert len(pairs) == rows
    assert all(p.reject is None or p.reject.reason for p in pairs)


MEMBER_NAMES = ["a.jpg", "a.txt", "a.json", "a.cls", "a.npy", "a.seg.png", "b.jpg", "b.txt", "b.cls", "c.npz", "c.jpg"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(MEMBER_NAMES), st.binary(max_size=40) | st.just(IMAGE)), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=4000), st.integers(min_value=0, max_value=3))
def test_any_tar_members_even_with_a_lying_header(members: list[tuple[str, bytes]], lie: int, which: int) -> None:
    blob = with_lying_header(members, liar=min(which, len(members) - 1), extra=lie)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "00000.tar"
        path.write_bytes(bytes(blob))
        reader = WebDatasetReader(path)
        pairs = list(reader.pairs(InputShard(0, "part-00000", {"file": str(path)})))
    assert pairs
    for p in pairs:
        assert p.reject is not None or p.image is not None or p.texts is not None
        for ext, data in p.extras.items():
            loader_unfit(ext, data)  # any member: a reason or None, never an exception


@FUZZ
@given(st.lists(st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode())
                | st.fixed_dictionaries({"file_name": st.sampled_from(["i0.jpg", "./i0.jpg", "i1.jpg", "../x.jpg", "", "gone.jpg"]), "text": st.text(max_size=20)}).map(lambda r: json.dumps(r).encode()),
                max_size=6),
       st.binary(max_size=200), st.sampled_from(["metadata.jsonl", "metadata.csv"]))
def test_any_imagefolder_metadata(rows: list[bytes], csv_bytes: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(2):
            (root / f"i{i}.jpg").write_bytes(IMAGE)
        (root / name).write_bytes(b"\n".join(rows) if name.endswith(".jsonl") else b"file_name,text\n" + csv_bytes)
        reader = ImageFolderReader(root, ReaderOptions())
        pairs = [p for shard in reader.plan() for p in reader.pairs(shard)]
    kept_images = sorted(p.image_id for p in pairs if p.reject is None)
    assert kept_images == ["i0", "i1"]  # each image once, whatever the rows said about it


@FUZZ
@given(st.lists(json_values | st.fixed_dictionaries({"index": json_values, "message": json_values | st.fixed_dictionaries({"content": json_values})}), max_size=6),
       st.binary(max_size=300))
def test_any_server_answer(choices: list, error_body: bytes) -> None:
    texts = choice_texts(choices)
    assert all(isinstance(t, str) and len(t) <= MAX_TEXT_CHARS for t in texts)
    assert len(texts) == sum(1 for c in choices if isinstance(c, dict))
    assert isinstance(_error_text(error_body), str)


@FUZZ
@given(st.dictionaries(st.sampled_from(["source", "id", "sha", "phash", "has_phash", "mirror", "has_mirror", "other"]),
                       st.sampled_from(["int", "str", "bool", "null", "float"]), max_size=8),
       json_values, st.integers(min_value=0, max_value=3))
def test_any_index_file_reads_or_is_one_error(columns: dict[str, str], meta: object, rows: int) -> None:
    make = {"int": lambda: pa.array(list(range(rows)), pa.int64()), "str": lambda: pa.array(["x"] * rows), "bool": lambda: pa.array([True] * rows),
            "null": lambda: pa.nulls(rows), "float": lambda: pa.array([0.5] * rows)}
    table = pa.table({name: make[kind]() for name, kind in columns.items()} or {"x": pa.nulls(rows)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix.parquet"
        pq.write_table(table.replace_schema_metadata({INDEX_KEY: json.dumps(meta).encode()}), path)
        try:
            index = read_index(path)
        except ReferenceIndexError:
            return
        for row in range(len(index)):
            index.name(row)  # every row names a source that exists
