"""Typed nested columns: whatever JSON-like values a shard holds, they fit one Arrow type,
survive Parquet, and come back as they were written."""

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from recaption.io.nested_columns import (
    NULL,
    arrow_type,
    conform,
    json_paths,
    merge,
    read_sketches,
    restore,
    settle,
    sketch_of,
    typed_metadata,
)

scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
# Dict values are never None (a null in a typed struct stands for a missing key), floats are
# finite (JSON, where kinds disagree, holds no infinity: recaption writes it as null everywhere).
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(st.one_of(inner, st.none()), max_size=4), st.dictionaries(st.sampled_from("abcd"), inner, max_size=4)),
    max_leaves=12,
)


def roundtrip(rows, tmp_path):
    sketch = NULL
    for row in rows:
        sketch = merge(sketch, sketch_of(row))
    settled = settle(sketch)
    column = pa.array([conform(r, settled) for r in rows], type=arrow_type(settled))
    table = pa.table({"col": column}).replace_schema_metadata(typed_metadata({"col": sketch}))
    pq.write_table(table, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    paths = json_paths(settle(read_sketches(back.schema.metadata)["col"]))
    return [restore(v, paths) for v in back.column("col").to_pylist()]


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(values, min_size=1, max_size=5))
def test_any_values_come_back_as_written(tmp_path_factory, rows):
    assert roundtrip(rows, tmp_path_factory.mktemp("n")) == rows


def test_kinds_that_disagree_become_json_and_agreeing_ones_stay_typed(tmp_path):
    rows = [{"n": 1, "x": "a", "empty": {}}, {"n": 2.5, "x": {"deep": [1]}, "extra": True}]
    sketch = merge(sketch_of(rows[0]), sketch_of(rows[1]))
    kind = arrow_type(settle(sketch))
    assert kind.field("n").type == pa.float64() and kind.field("extra").type == pa.bool_()
    assert sorted(map(tuple, json_paths(settle(sketch)))) == [("empty",), ("x",)]
    assert roundtrip(rows, tmp_path) == rows


def test_a_forged_or_foreign_metadata_entry_is_not_a_sketch():
    assert read_sketches(None) == {} and read_sketches({b"other": b"1"}) == {}
    assert read_sketches({b"recaption": b'{"typed": {"meta": ["struct", 5]}}'}) == {}
    assert read_sketches({b"recaption": b"not json"}) == {}
    assert read_sketches({b"recaption": b'{"typed": {"meta": ["list", ["int"]]}}'}) == {"meta": ("list", ("int",))}
