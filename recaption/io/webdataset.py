"""WebDataset tar shards: ``KEY.jpg|png|webp`` + ``KEY.txt`` and/or ``KEY.json`` per sample.

Input is a folder of ``.tar`` files (or one tar); each tar is one shard, read as a stream
so a shard is never held in memory. Nothing is ever extracted to disk, and members whose
names are absolute or climb out with ``..``, links and devices, and over-large members
are rejected with the reason rather than trusted. A tar that breaks part way yields the
samples before the break and one rejected record that says where it broke.

Output: ``part-NNNNN.tar`` with ``KEY.<ext>`` (the image), ``KEY.txt`` (the training
caption) and ``KEY.json`` (the whole record), the layout open_clip and img2dataset use.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recaption.io.base import (
    IMAGE_EXTS,
    InputShard,
    Reader,
    Writer,
    atomic_path,
    broken_pair,
    register_reader,
    register_writer,
    safe_key,
    shard_name,
    unsafe_member_reason,
)
from recaption.io.records import pair_from_record, record_from_pair, training_text
from recaption.record import Pair

MAX_MEMBER_BYTES = 256 * 1024 * 1024


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


@register_reader
class WebDatasetReader(Reader):
    format = "webdataset"

    def plan(self) -> list[InputShard]:
        return [InputShard(i, shard_name(i), {"file": str(p)}) for i, p in enumerate(self.input_files("*.tar", ".tar shards"))]

    def read(self, shard: InputShard) -> Iterator[Pair]:
        path = Path(shard.spec["file"])
        group: list[tuple[str, str, bytes | None, str | None]] = []  # (member, ext, data, problem)
        current: str | None = None
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    key, ext = split_key(member.name)
                    if current is not None and key != current:
                        yield self._sample(path, current, group)
                        group = []
                    current = key
                    problem = unsafe_member_reason(member.name)
                    if problem is None and not member.isfile():
                        problem = "not a regular file (link or device)"
                    if problem is None and member.size > MAX_MEMBER_BYTES:
                        problem = f"member of {member.size} bytes > {MAX_MEMBER_BYTES}"
                    data = None
                    if problem is None:
                        fh = tar.extractfile(member)
                        data = fh.read() if fh else b""
                    group.append((member.name, ext, data, problem))
            if current is not None:
                yield self._sample(path, current, group)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if current is not None and group:
                yield self._sample(path, current, group)
            yield broken_pair(f"{path.stem}:broken", "corrupt_shard", f"{path.name} breaks after key {current!r}: {exc}", {"file": str(path)})

    def _sample(self, path: Path, key: str, group: list[tuple[str, str, bytes | None, str | None]]) -> Pair:
        origin: dict[str, Any] = {"file": str(path), "key": key, "members": [m for m, *_ in group]}
        fallback_id = key
        problems = [f"{m}: {p}" for m, _, _, p in group if p]
        if problems:
            return broken_pair(fallback_id, "unsafe_member", "; ".join(problems)[:300], origin)
        by_ext = {ext: data for _, ext, data, _ in group}
        record: dict[str, Any] = {}
        if "json" in by_ext:
            try:
                record = json.loads(by_ext["json"] or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                return broken_pair(fallback_id, "malformed_json", f"{key}.json: {exc}", origin)
            if not isinstance(record, dict):
                return broken_pair(fallback_id, "wrong_type", f"{key}.json is not an object", origin)
        if "txt" in by_ext and not any(k in record for k in ("texts", "text", "caption", "captions")):
            try:
                record["texts"] = [by_ext["txt"].decode("utf-8")]  # type: ignore[union-attr]
            except UnicodeDecodeError as exc:
                return broken_pair(fallback_id, "non_utf8", f"{key}.txt: {exc}", origin)
        image_ext = next((e for e in by_ext if f".{e}" in IMAGE_EXTS), None)
        image = by_ext.get(image_ext) if image_ext else None
        pair = pair_from_record(record, self.options, origin, None, fallback_id, image_bytes=image)
        if image is not None:
            pair.image_ext = "jpg" if image_ext == "jpeg" else image_ext
        return pair


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def image_bytes_and_ext(pair: Pair) -> tuple[bytes, str]:
    """The encoded image of a kept pair, whether it travelled as bytes or as a path."""
    if isinstance(pair.image, (bytes, bytearray)):
        return bytes(pair.image), pair.image_ext or "jpg"
    path = Path(str(pair.image))
    ext = path.suffix.lower().lstrip(".") or "jpg"
    return path.read_bytes(), ("jpg" if ext == "jpeg" else ext)


@register_writer
class WebDatasetWriter(Writer):
    format = "webdataset"
    suffix = ".tar"

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        with atomic_path(self.target(shard)) as tmp, tarfile.open(tmp, "w") as tar:
            row = 0
            used: set[str] = set()

            def add(pair: Pair) -> None:
                nonlocal row
                key = safe_key(pair.image_id, row, used)
                data, ext = image_bytes_and_ext(pair)
                _add_member(tar, f"{key}.{ext}", data)
                _add_member(tar, f"{key}.txt", training_text(pair).encode("utf-8"))
                record = json.dumps(record_from_pair(pair), ensure_ascii=False)
                _add_member(tar, f"{key}.json", record.encode("utf-8"))
                row += 1

            yield add
