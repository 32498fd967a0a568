"""The mapping between a flat record (a JSON line, a Parquet row, a sidecar .json) and a Pair.

Readers of every format call ``pair_from_record``; writers call ``record_from_pair``. Our
own output carries ``captions``, ``scores``, ``meta`` and ``origin``, so a dataset written
by one run can be read back by the next one without loss.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from recaption.io.base import (
    ID_FIELDS,
    IMAGE_BYTES_FIELDS,
    IMAGE_PATH_FIELDS,
    SAFE_EXT,
    TEXT_FIELDS,
    URL_FIELDS,
    ReaderOptions,
    broken_pair,
    first_present,
    texts_from,
)
from recaption.io.safejson import RecordProblem, check_value, decode_text, dumps, load_record, parse_record
from recaption.limits import INT_LIMIT, MAX_EXTRAS, MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_TEXTS
from recaption.record import Caption, Pair

_IMAGE_FIELDS = frozenset(IMAGE_PATH_FIELDS + IMAGE_BYTES_FIELDS + URL_FIELDS)
OWN_FIELDS = ("captions", "scores", "meta", "reject", "origin", "caption", "image_ext", "extras")
# Caption field -> the types its value may have (a JSON number may arrive as int or float).
_CAPTION_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "source": (str,),
    "round": (int,),
    "parent": (int, type(None)),
    "params": (dict,),
    "model_hash": (str, type(None)),
    "scores": (dict,),
    "selected": (bool,),
}
assert set(_CAPTION_TYPES) == {f.name for f in fields(Caption)}


def _maybe_json(value: Any, name: str) -> Any:
    # Parquet stores the nested fields as JSON strings to keep one schema for every row.
    if isinstance(value, str) and value[:1] in "[{":
        return load_record(value, name)
    return value


def _nested(record: dict[str, Any], name: str, kind: type) -> Any:
    """An own nested field (scores, meta, origin, captions), parsed and type-checked."""
    value = _maybe_json(record.get(name), name)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise RecordProblem("wrong_type", f"{name} is a {type(value).__name__}, not a{'n' if kind is dict else ''} {'object' if kind is dict else 'list'}")
    return value


SAFE_EXTRA_EXT = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")  # a carried member's extension: it becomes an output file name's end


def _extras(value: Any) -> dict[str, bytes]:
    """The carried members a Parquet row of ours holds (``[{ext, bytes}]``); anything else is none."""
    if not isinstance(value, list):
        return {}
    found = {}
    for item in value[:MAX_EXTRAS]:
        if isinstance(item, dict) and isinstance(item.get("ext"), str) and isinstance(item.get("bytes"), bytes) and SAFE_EXTRA_EXT.fullmatch(item["ext"]):
            found[item["ext"]] = item["bytes"]
    return found


def caption_from_dict(value: Any, where: str) -> Caption:
    """A Caption from its stored form; RecordProblem where a field is unknown or of the wrong type."""
    if not isinstance(value, dict):
        raise RecordProblem("wrong_type", f"{where} is a {type(value).__name__}, not an object")
    unknown = sorted(set(value) - set(_CAPTION_TYPES))
    if unknown:
        raise RecordProblem("wrong_type", f"{where} has unknown field(s) {unknown[:5]}")
    for key in ("text", "source"):
        if key not in value:
            raise RecordProblem("missing_field", f"{where} has no {key!r}")
    for key, item in value.items():
        if not isinstance(item, _CAPTION_TYPES[key]) or (isinstance(item, bool) and bool not in _CAPTION_TYPES[key]):
            raise RecordProblem("wrong_type", f"{where}.{key} is a {type(item).__name__}")
    if len(value["text"]) > MAX_TEXT_CHARS:
        raise RecordProblem("text_too_long", f"{where}.text has {len(value['text'])} characters > {MAX_TEXT_CHARS}")
    return Caption(**value)


def pair_from_record(
    record: Any,
    options: ReaderOptions,
    origin: dict[str, Any],
    base_dir: Path | None,
    fallback_id: str,
    image_bytes: bytes | None = None,
) -> Pair:
    """Build a Pair from one flat record; a record that does not fit comes back rejected.

    Never raises: whatever the record holds, the answer is a Pair, rejected at ``read``
    with the reason when it cannot be taken in.
    """
    try:
        return _pair_from_record(record, options, origin, base_dir, fallback_id, image_bytes)
    except RecordProblem as exc:
        return broken_pair(_usable_id(record, options) or fallback_id, exc.reason, str(exc)[:300], origin)
    except Exception as exc:  # noqa: BLE001 - a record nobody foresaw must not stop the run
        return broken_pair(fallback_id, "malformed_record", f"{type(exc).__name__}: {exc}"[:300], origin)


def _usable_id(record: Any, options: ReaderOptions) -> str | None:
    """The record's own id where it is a plain short string or number, so a reject can be found by it."""
    if not isinstance(record, dict):
        return None
    key = first_present(record, options.id_field, ID_FIELDS)
    value = record.get(key) if key else None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value) or len(str(value)) > MAX_ID_CHARS:
        return None
    return str(value) if not isinstance(value, int) or -INT_LIMIT <= value < INT_LIMIT else None


def _pair_from_record(
    record: Any,
    options: ReaderOptions,
    origin: dict[str, Any],
    base_dir: Path | None,
    fallback_id: str,
    image_bytes: bytes | None,
) -> Pair:
    """The Pair of a record; RecordProblem (made a reject by ``pair_from_record``) where it does not fit."""
    if not isinstance(record, dict):
        raise RecordProblem("wrong_type", f"a record must be an object, not {type(record).__name__}")
    image_id, id_key = _image_id_of(record, options, fallback_id)
    record = check_value(record)
    texts, text_key = _texts_of(record, options)
    image, used = (image_bytes, set()) if image_bytes is not None else _image_of(record, options, base_dir)
    # A record recaption wrote keeps the origin it had when it first came in (intermediate
    # files between passes, or an earlier run's output, are not where it came from).
    pair = Pair(image_id=image_id, image=image, texts=texts, origin=_nested(record, "origin", dict) or origin)
    _take_own_fields(pair, record)
    _carry_the_rest(pair, record, used | {id_key, text_key})
    return pair


def _image_id_of(record: dict[str, Any], options: ReaderOptions, fallback_id: str) -> tuple[str, str | None]:
    id_key = first_present(record, options.id_field, ID_FIELDS)
    if options.id_field and id_key is None:
        raise RecordProblem("missing_field", f"no field {options.id_field!r} (--id-field)")
    raw_id = record.get(id_key) if id_key else None
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise RecordProblem("wrong_type", f"{id_key} is a {type(raw_id).__name__}")
    image_id = str(raw_id) if raw_id not in (None, "") else fallback_id
    if len(image_id) > MAX_ID_CHARS:
        raise RecordProblem("id_too_long", f"{id_key} has {len(image_id)} characters > {MAX_ID_CHARS}")
    return image_id, id_key


def _texts_of(record: dict[str, Any], options: ReaderOptions) -> tuple[list[str], str | None]:
    text_key = first_present(record, options.text_field, TEXT_FIELDS)
    if options.text_field and text_key is None:
        raise RecordProblem("missing_field", f"no field {options.text_field!r} (--text-field)")
    texts = texts_from(record.get(text_key)) if text_key else []
    if isinstance(texts, str):
        raise RecordProblem("wrong_type", f"{text_key}: {texts}")
    if len(texts) > MAX_TEXTS:
        raise RecordProblem("too_many_texts", f"{text_key} holds {len(texts)} texts > {MAX_TEXTS}")
    longest = max(map(len, texts), default=0)
    if longest > MAX_TEXT_CHARS:
        raise RecordProblem("text_too_long", f"{text_key} holds a text of {longest} characters > {MAX_TEXT_CHARS}")
    return texts, text_key


def _image_of(record: dict[str, Any], options: ReaderOptions, base_dir: Path | None) -> tuple[str | bytes | None, set[str | None]]:
    """The image (bytes, a path resolved against the image root, or a URL) and the fields it came from."""
    bytes_key = first_present(record, options.image_field, IMAGE_BYTES_FIELDS)
    value = record.get(bytes_key) if bytes_key else None
    struct_path = None
    if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes", "path"}
        struct_path = value.get("path") if isinstance(value.get("path"), str) else None
        value = value.get("bytes") or struct_path
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), {bytes_key}
    path_key = first_present(record, options.image_field, IMAGE_PATH_FIELDS)
    path_value = record.get(path_key) if path_key else (value if isinstance(value, str) else None)
    if isinstance(path_value, dict) and path_key == bytes_key:  # a path-only Image struct under any name
        path_value = struct_path
    if path_value is not None and not isinstance(path_value, str):
        raise RecordProblem("wrong_type", f"{path_key} is a {type(path_value).__name__}")
    if path_value:
        root = Path(options.image_root) if options.image_root else base_dir
        return str((root / path_value) if root and not Path(path_value).is_absolute() else Path(path_value)), {path_key, bytes_key}
    url_key = first_present(record, None, URL_FIELDS)
    if url_key and isinstance(record.get(url_key), str):
        return record[url_key], set()
    return None, set()


def _take_own_fields(pair: Pair, record: dict[str, Any]) -> None:
    """What recaption itself wrote into a record: captions, scores, meta, image_ext, extras."""
    captions = _nested(record, "captions", list)
    if len(captions) > MAX_TEXTS:
        raise RecordProblem("too_many_texts", f"captions holds {len(captions)} captions > {MAX_TEXTS}")
    pair.captions = [caption_from_dict(cap, f"captions[{i}]") for i, cap in enumerate(captions)]
    pair.scores.update(_nested(record, "scores", dict))
    pair.meta.update(_nested(record, "meta", dict))
    previous = _maybe_json(record.get("reject"), "reject")
    if previous:
        # An input record never arrives rejected: a reject field is what an earlier run said
        # (say, of a rejects file read back) and is kept for reference, not obeyed or counted.
        pair.meta["previous_reject"] = previous
    ext = record.get("image_ext")
    if isinstance(ext, str) and SAFE_EXT.fullmatch(ext.lower()):  # it travels into output file names
        pair.image_ext = ext.lower()
    pair.extras = _extras(record.get("extras"))


def _carry_the_rest(pair: Pair, record: dict[str, Any], used: set[str | None]) -> None:
    """Every other field of the record goes into meta, unchanged (bytes excepted)."""
    for key, value in record.items():
        if value is None and key in _IMAGE_FIELDS:  # an empty image column (ours: image_path beside bytes) says nothing
            continue
        if key not in used and key not in OWN_FIELDS and key not in pair.meta and not isinstance(value, (bytes, bytearray)):
            pair.meta[key] = value


def record_from_sidecars(json_raw: bytes | None, txt_raw: bytes | None, where: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a sample kept in sidecars (``KEY.json``, ``KEY.txt``, beside an image file
    or in a tar): the .json is the whole record, as recaption writes it, and wins over ``base``
    (say, a metadata.jsonl row); the .txt gives the texts where the record names none.
    RecordProblem where a sidecar cannot be taken in; ``where`` names the sample in it."""
    record = dict(base or {})
    if json_raw is not None:
        record = parse_record(json_raw or b"{}", f"{where}.json")
        if not isinstance(record, dict):
            raise RecordProblem("wrong_type", f"{where}.json is not an object")
    if txt_raw is not None and not any(k in record for k in ("texts", "text", "caption", "captions")):
        record["texts"] = [decode_text(txt_raw, f"{where}.txt")]
    return record


def cleaned_alt_text(pair: Pair) -> str | None:
    """The alt-text as training may use it: the end of the first text's chain of edits
    (cleaned, sensitive-checked, fitted to the token budget), or None where nothing of it was
    left or it never went through the text stages."""
    found = None
    for cap in pair.captions:  # a child always comes after its parent
        if cap.source == "alt-text" and cap.params.get("text_index", 0) == 0:
            found = cap.text
    return found


def training_text(pair: Pair) -> str:
    """The text a training consumer should use: the selected caption, else the cleaned alt-text;
    the raw alt-text only for a pair that no text stage has seen."""
    for cap in pair.captions:
        if cap.selected:
            return cap.text
    cleaned = cleaned_alt_text(pair)
    if cleaned is not None:
        return cleaned
    # A pair whose alt-text cleaned to nothing has "cleaning" on record: its raw text is junk.
    return pair.alt_text if not pair.captions and "cleaning" not in pair.meta else ""


def record_from_pair(pair: Pair, image_path: str | None = None, holds_extras: bool = False) -> dict[str, Any]:
    """The flat record every writer stores (image bytes and extras are the writer's business;
    a writer whose format cannot hold extras says so, and the record names what was left out)."""
    d = pair.to_dict()
    if pair.extras and not holds_extras:
        earlier = d["meta"].get("dropped_members")
        d["meta"]["dropped_members"] = [*(earlier if isinstance(earlier, list) else []), *(f".{ext}: this output format holds no extra members" for ext in pair.extras)]
    d.pop("image", None)
    out: dict[str, Any] = {"image_id": pair.image_id}
    if image_path is not None:
        out["image_path"] = image_path
    out["texts"] = d["texts"]
    out["caption"] = training_text(pair)
    for key in ("captions", "scores", "meta", "origin"):
        out[key] = d[key]
    if d["reject"] is not None:
        out["reject"] = d["reject"]
    else:
        check_readable(out)
    return out


def check_readable(record: dict[str, Any]) -> None:
    """Refuse to write a record our own readers would refuse: it goes through the very checks a
    reader makes (its JSON size, depth and integers, then every field as ``pair_from_record``
    takes it), so whatever a run writes, a run reads back. RecordProblem with the reader's reason.

    The readers' limits (``limits.py``) are the one source of both sides; a rejected record (the
    rejects output) is not checked: it is kept whole for a person to look at."""
    parsed = parse_record(dumps(record).encode("utf-8"), "the record as written")
    found = pair_from_record(parsed, _AS_WRITTEN, {}, None, str(record.get("image_id", "")))
    if found.reject is not None:
        raise RecordProblem(found.reject.reason, f"a reader would refuse it: {found.reject.detail}")


_AS_WRITTEN = ReaderOptions(allow_outside_input=True)  # how a record of ours reads: its own field names
