"""JSON in and out for records that nobody vetted: bounded, strict on the way in, standard on the way out.

Input JSON comes from scrapes, other tools and hostile users. ``load_record`` turns one
record's JSON text into a checked value or into the reason it cannot be one (too large, nested too
deep, a number no reader downstream can hold, a lone surrogate that no UTF-8 file can
store), so a reader can reject that record and go on; the readers call ``parse_record`` and
leave the check to ``pair_from_record``, which every record passes through. NaN and Infinity, which Python's
``json`` reads although they are not JSON, become null.

``dumps`` writes standard JSON whatever a stage left in a record: the fast path is a plain
``json.dumps``; only a record holding a non-finite float or a lone surrogate pays for a
repaired copy.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from recaption.limits import INT_LIMIT, MAX_JSON_DEPTH, MAX_RECORD_BYTES


class RecordProblem(ValueError):
    """Why a record's JSON cannot be taken in: ``reason`` is the reject reason, the message its detail."""

    def __init__(self, reason: str, detail: str, rest: dict | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.rest = rest  # what of the record could be read, where a part of it could not (kept with the reject)


def _none_for_constant(_: str) -> None:
    return None  # NaN, Infinity, -Infinity: not JSON; read as null


def check_value(value: Any, where: str = "record", depth: int = 0) -> Any:
    """``value`` with non-finite floats as None; raises RecordProblem for what no writer can store."""
    if depth > MAX_JSON_DEPTH:
        raise RecordProblem("too_deep", f"{where} nests more than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if _has_surrogate(value):
            raise RecordProblem("invalid_unicode", f"{where} holds a lone surrogate (not a character UTF-8 can store)")
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise RecordProblem("number_out_of_range", f"{where} holds an integer of {len(str(abs(value)))} digits (more than 64 bits)")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = str(k)
            check_value(key, where, depth + 1)  # a key is a string too
            out[key] = check_value(v, key if depth == 0 else where, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [check_value(v, where, depth + 1) for v in value]
    return value  # bytes and other values a reader put there itself (image bytes)


def parse_record(raw: bytes | str, what: str = "record") -> Any:
    """Parse one record's JSON text, bounded (size, the parser's own depth, Python's integer
    limit); RecordProblem (with a reject reason) if it cannot be. The values are not checked
    yet: readers leave that to ``pair_from_record``, which checks every record once."""
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordProblem("too_large", f"{what} of {len(raw)} bytes > the limit of {MAX_RECORD_BYTES}")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordProblem("non_utf8", f"{what}: {exc}") from None
    else:
        text = raw
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors put first
    try:
        value = json.loads(text, parse_constant=_none_for_constant)
    except json.JSONDecodeError as exc:
        raise RecordProblem("malformed_json", f"{what}: {exc.msg} at column {exc.colno}") from None
    except RecursionError:  # the parser's own stack ends far deeper than our limit
        raise RecordProblem("too_deep", f"{what} nests more than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # an integer over Python's 4300-digit limit
        raise RecordProblem("number_out_of_range", f"{what}: {str(exc)[:150]}") from None
    return value


def load_record(raw: bytes | str, what: str = "record") -> Any:
    """Parse and check one JSON document (depth, 64-bit integers, UTF-8, NaN as null)."""
    return check_value(parse_record(raw, what))


def read_small_file(path: Path, what: str, limit: int = MAX_RECORD_BYTES) -> bytes:
    """The bytes of a sidecar file; RecordProblem if it is not a regular file or is over ``limit``."""
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise RecordProblem("not_a_file", f"{what} is not a regular file")
            data = fh.read(min(info.st_size, limit) + 1)
    except OSError as exc:
        raise RecordProblem("unreadable_file", f"{what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise RecordProblem("too_large", f"{what} is over the limit of {limit} bytes")
    return data


def decode_text(raw: bytes, what: str) -> str:
    """A sidecar caption's text (UTF-8, a leading byte-order mark dropped)."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise RecordProblem("non_utf8", f"{what}: {exc}") from None


def _repaired(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if _has_surrogate(value) else value
    if isinstance(value, dict):
        return {str(k): _repaired(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_repaired(v) for v in value]
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def dumps(value: Any, **kwargs: Any) -> str:
    """Standard JSON text that encodes to UTF-8: non-finite floats as null, lone surrogates as U+FFFD."""
    kwargs.setdefault("ensure_ascii", False)
    try:
        text = json.dumps(value, allow_nan=False, **kwargs)
        if not kwargs["ensure_ascii"]:
            text.encode("utf-8")
        return text
    except (ValueError, UnicodeEncodeError):
        return json.dumps(_repaired(value), allow_nan=False, **kwargs)
