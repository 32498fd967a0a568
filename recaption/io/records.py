"""The mapping between a flat record (a JSON line, a Parquet row, a sidecar .json) and a Pair.

Readers of every format call ``pair_from_record``; writers call ``record_from_pair``. Our
own output carries ``captions``, ``scores``, ``meta`` and ``origin``, so a dataset written
by one run can be read back by the next one without loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recaption.io.base import (
    ID_FIELDS,
    IMAGE_BYTES_FIELDS,
    IMAGE_PATH_FIELDS,
    TEXT_FIELDS,
    URL_FIELDS,
    ReaderOptions,
    broken_pair,
    first_present,
    texts_from,
)
from recaption.record import Caption, Pair, Reject

OWN_FIELDS = ("captions", "scores", "meta", "reject", "origin", "caption", "image_ext")


def _maybe_json(value: Any) -> Any:
    # Parquet stores the nested fields as JSON strings to keep one schema for every row.
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def pair_from_record(
    record: Any,
    options: ReaderOptions,
    origin: dict[str, Any],
    base_dir: Path | None,
    fallback_id: str,
    image_bytes: bytes | None = None,
) -> Pair:
    """Build a Pair from one flat record; a record that does not fit comes back rejected."""
    if not isinstance(record, dict):
        return broken_pair(fallback_id, "wrong_type", f"a record must be an object, not {type(record).__name__}", origin)
    id_key = first_present(record, options.id_field, ID_FIELDS)
    if options.id_field and id_key is None:
        return broken_pair(fallback_id, "missing_field", f"no field {options.id_field!r} (--id-field)", origin)
    raw_id = record.get(id_key) if id_key else None
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        return broken_pair(fallback_id, "wrong_type", f"{id_key} is a {type(raw_id).__name__}", origin)
    image_id = str(raw_id) if raw_id not in (None, "") else fallback_id

    text_key = first_present(record, options.text_field, TEXT_FIELDS)
    if options.text_field and text_key is None:
        return broken_pair(image_id, "missing_field", f"no field {options.text_field!r} (--text-field)", origin)
    texts = texts_from(record.get(text_key)) if text_key else []
    if isinstance(texts, str):
        return broken_pair(image_id, "wrong_type", f"{text_key}: {texts}", origin)

    image: str | bytes | None = image_bytes
    used = {id_key, text_key}
    if image is None:
        bytes_key = first_present(record, options.image_field, IMAGE_BYTES_FIELDS)
        value = record.get(bytes_key) if bytes_key else None
        if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes", "path"}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            image, used = bytes(value), used | {bytes_key}
        else:
            path_key = first_present(record, options.image_field, IMAGE_PATH_FIELDS)
            path_value = record.get(path_key) if path_key else (value if isinstance(value, str) else None)
            if path_value is not None and not isinstance(path_value, str):
                return broken_pair(image_id, "wrong_type", f"{path_key} is a {type(path_value).__name__}", origin)
            if path_value:
                root = Path(options.image_root) if options.image_root else base_dir
                image = str((root / path_value) if root and not Path(path_value).is_absolute() else Path(path_value))
                used |= {path_key, bytes_key}
            else:
                url_key = first_present(record, None, URL_FIELDS)
                if url_key and isinstance(record.get(url_key), str):
                    image = record[url_key]

    # A record recaption wrote keeps the origin it had when it first came in (intermediate
    # files between passes, or an earlier run's output, are not where it came from).
    saved_origin = _maybe_json(record.get("origin"))
    pair = Pair(image_id=image_id, image=image, texts=texts, origin=saved_origin if isinstance(saved_origin, dict) and saved_origin else origin)
    for cap in _maybe_json(record.get("captions")) or []:
        if isinstance(cap, dict) and "text" in cap and "source" in cap:
            pair.captions.append(Caption(**cap))
    pair.scores.update(_maybe_json(record.get("scores")) or {})
    pair.meta.update(_maybe_json(record.get("meta")) or {})
    previous = _maybe_json(record.get("reject"))
    if isinstance(previous, dict):
        pair.reject = Reject(**previous)
    if record.get("image_ext"):
        pair.image_ext = record["image_ext"]
    for key, value in record.items():
        if key not in used and key not in OWN_FIELDS and key not in pair.meta and not isinstance(value, (bytes, bytearray)):
            pair.meta[key] = value
    return pair


def training_text(pair: Pair) -> str:
    """The text a training consumer should use: the selected caption, else the alt-text."""
    for cap in pair.captions:
        if cap.selected:
            return cap.text
    return pair.alt_text


def record_from_pair(pair: Pair, image_path: str | None = None, nested_as_json: bool = False) -> dict[str, Any]:
    """The flat record every writer stores (image bytes are the writer's business)."""
    d = pair.to_dict()
    d.pop("image", None)
    out: dict[str, Any] = {"image_id": pair.image_id}
    if image_path is not None:
        out["image_path"] = image_path
    out["texts"] = d["texts"]
    out["caption"] = training_text(pair)
    for key in ("captions", "scores", "meta", "origin"):
        out[key] = json.dumps(d[key], ensure_ascii=False) if nested_as_json else d[key]
    if d["reject"] is not None:
        out["reject"] = json.dumps(d["reject"]) if nested_as_json else d["reject"]
    return out
