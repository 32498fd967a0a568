"""Nested fields (captions, scores, meta, origin) as typed Arrow columns, not JSON strings.

A Parquet file has one schema, and the nested fields of a shard are free-form (a user's meta
keys, the scores the recipe's stages write). So the writer first learns the shape of what a
shard holds, a *sketch* (``sketch_of`` each value, ``merge`` them), turns it into an Arrow type
(``arrow_type``) and then fits every value to it (``conform``): a key missing from a row is
null, an int where others are floats becomes a float. Where values disagree in kind (a string
here, an object there), where an object has no keys (Parquet cannot store an empty struct) or
too many to be a schema (a hostile input's meta), that subtree is stored as a JSON string and
the file's metadata keeps the sketch, so that ``restore`` gives back exactly what was written,
less the nulls that only stand for a missing key. A folder of such files is brought to one
schema at the end of a run (``merge`` of the files' sketches), so that tools which take the
first file's schema for all of them (Hugging Face ``datasets``) read every file.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from recaption.io.safejson import dumps, load_record

# A sketch is a tuple: ("null",), ("bool",), ("int",), ("float",), ("string",), ("json",),
# ("list", item_sketch) or ("struct", {key: sketch}).
NULL, JSON = ("null",), ("json",)
MAX_STRUCT_FIELDS = 256  # more distinct keys than this is data, not a schema: stored as JSON
LIST_ITEM = "*"  # the path step into a list's items
METADATA_KEY = b"recaption"


def sketch_of(value: Any) -> tuple:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return ("bool",)
    if isinstance(value, int):
        return ("int",)
    if isinstance(value, float):
        return ("float",)
    if isinstance(value, str):
        return ("string",)
    if isinstance(value, (list, tuple)):
        item = NULL
        for v in value:
            item = merge(item, sketch_of(v))
        return ("list", item)
    if isinstance(value, dict):
        if len(value) > MAX_STRUCT_FIELDS:
            return JSON
        return ("struct", {str(k): sketch_of(v) for k, v in value.items()})
    return JSON


def merge(a: tuple, b: tuple) -> tuple:
    """The sketch that holds values of both ``a`` and ``b``."""
    if a == NULL or a == b:
        return b
    if b == NULL:
        return a
    if {a[0], b[0]} == {"int", "float"}:
        return ("float",)
    if a[0] == b[0] == "list":
        return ("list", merge(a[1], b[1]))
    if a[0] == b[0] == "struct":
        fields = dict(a[1])
        for key, sketch in b[1].items():
            fields[key] = merge(fields.get(key, NULL), sketch)
        return ("struct", fields) if len(fields) <= MAX_STRUCT_FIELDS else JSON
    return JSON


def settle(sketch: tuple) -> tuple:
    """``sketch`` with what Parquet cannot store as such turned into JSON (empty structs)."""
    if sketch[0] == "list":
        return ("list", settle(sketch[1]))
    if sketch[0] == "struct":
        return ("struct", {k: settle(s) for k, s in sketch[1].items()}) if sketch[1] else JSON
    return sketch


_SCALARS = {"null": pa.null(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "string": pa.string(), "json": pa.string()}


def arrow_type(sketch: tuple) -> pa.DataType:
    if sketch[0] == "list":
        return pa.list_(arrow_type(sketch[1]))
    if sketch[0] == "struct":
        return pa.struct([(k, arrow_type(s)) for k, s in sketch[1].items()])
    return _SCALARS[sketch[0]]


def json_paths(sketch: tuple, path: tuple[str, ...] = ()) -> list[list[str]]:
    """The paths (keys, ``*`` for a list's items) whose values are stored as JSON strings."""
    if sketch == JSON:
        return [list(path)]
    if sketch[0] == "list":
        return json_paths(sketch[1], (*path, LIST_ITEM))
    if sketch[0] == "struct":
        return [p for k, s in sketch[1].items() for p in json_paths(s, (*path, k))]
    return []


def conform(value: Any, sketch: tuple) -> Any:
    """``value`` shaped to ``sketch``'s Arrow type (the sketch was made from values like it)."""
    if value is None:
        return None
    kind = sketch[0]
    if kind == "json":
        return dumps(value)
    if kind == "float":
        return float(value)
    if kind == "list":
        return [conform(v, sketch[1]) for v in value]
    if kind == "struct":
        return {k: conform(value.get(k), s) for k, s in sketch[1].items()}
    return value


def restore(value: Any, paths: list[list[str]], depth: int = 0) -> Any:
    """A value read from a typed column back to what was written: JSON subtrees parsed, the
    nulls of keys a row never had dropped."""
    if value is None:
        return None
    if any(len(p) == depth for p in paths):  # this subtree was stored as JSON
        return load_record(value, "a nested value") if isinstance(value, str) else value
    if isinstance(value, list):
        inner = [p for p in paths if p[depth] == LIST_ITEM]
        return [restore(v, inner, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: restore(v, [p for p in paths if p[depth] == k], depth + 1) for k, v in value.items() if v is not None}
    return value


def hf_feature(field_type: pa.DataType) -> Any:
    """The Hugging Face ``datasets`` feature (as its JSON) for an Arrow type."""
    if pa.types.is_struct(field_type):
        return {field_type.field(i).name: hf_feature(field_type.field(i).type) for i in range(field_type.num_fields)}
    if pa.types.is_list(field_type) or pa.types.is_large_list(field_type):
        return {"feature": hf_feature(field_type.value_type), "_type": "List"}
    return {"dtype": str(field_type), "_type": "Value"}


def hf_yaml_feature(name: str, field_type: pa.DataType | str) -> dict:
    """A named feature as a Hugging Face dataset card lists it (``dataset_info.features``);
    ``field_type`` is an Arrow type or the name of a datasets feature ("image")."""
    inner = _yaml_inner(field_type)
    if isinstance(inner, list):
        return {"name": name, "struct": inner}
    if isinstance(inner, dict):
        return {"name": name, **inner}
    return {"name": name, "dtype": inner}


def _yaml_inner(field_type: pa.DataType | str) -> Any:
    if isinstance(field_type, str):
        return field_type
    if pa.types.is_struct(field_type):
        return [hf_yaml_feature(field_type.field(i).name, field_type.field(i).type) for i in range(field_type.num_fields)]
    if pa.types.is_list(field_type) or pa.types.is_large_list(field_type):
        return {"list": _yaml_inner(field_type.value_type)}
    return {"double": "float64", "float": "float32"}.get(str(field_type), str(field_type))


def typed_metadata(sketches: dict[str, tuple]) -> dict[bytes, bytes]:
    """The file metadata that records each typed column's sketch (its JSON paths follow from it)."""
    return {METADATA_KEY: json.dumps({"typed": sketches}).encode()}


def read_sketches(metadata: dict[bytes, bytes] | None) -> dict[str, tuple]:
    """Column -> sketch, for a file this module wrote; empty for any other file (or a forged
    entry that is not a sketch)."""
    raw = (metadata or {}).get(METADATA_KEY)
    if not raw:
        return {}
    try:
        typed = json.loads(raw)["typed"]
        return {str(name): _sketch_from_json(value, 0) for name, value in typed.items()}
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
        return {}


def _sketch_from_json(value: Any, depth: int) -> tuple:
    if depth > 64 or not isinstance(value, list) or not value:
        raise ValueError("not a sketch")
    kind = value[0]
    if kind in _SCALARS and len(value) == 1:
        return (kind,)
    if kind == "list" and len(value) == 2:
        return ("list", _sketch_from_json(value[1], depth + 1))
    if kind == "struct" and len(value) == 2 and isinstance(value[1], dict):
        return ("struct", {str(k): _sketch_from_json(v, depth + 1) for k, v in value[1].items()})
    raise ValueError("not a sketch")
