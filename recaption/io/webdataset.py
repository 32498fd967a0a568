"""WebDataset tar shards: ``KEY.jpg|png|webp`` + ``KEY.txt`` and/or ``KEY.json`` per sample.

Input is a folder of ``.tar`` files (or one tar); each tar is one shard, read as a stream
so a shard is never held in memory. Nothing is ever extracted to disk, and members whose
names are absolute or climb out with ``..``, links and devices, and over-large members
are rejected with the reason rather than trusted. Only what a sample needs is read: its
first image (at most ``MAX_IMAGE_BYTES``), its ``.txt`` and ``.json`` (at most
``MAX_RECORD_BYTES`` each); other members are skipped unread, so one key with many huge
members costs no memory. Compressed tars (``.tar.gz`` and the like, whatever the name
says) are read on purpose, under the same limits. A tar that breaks part way yields the
samples before the break and one rejected record that says where it broke.

Output: ``part-NNNNN.tar`` with ``KEY.<ext>`` (the image), ``KEY.txt`` (the training
caption) and ``KEY.json`` (the whole record), the layout open_clip and img2dataset use.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recaption.imaging import ImageFileError, read_image_file
from recaption.io.base import (
    IMAGE_EXTS,
    InputShard,
    Reader,
    Writer,
    atomic_path,
    broken_pair,
    register_reader,
    register_writer,
    safe_ext,
    safe_key,
    shard_name,
    unsafe_member_reason,
)
from recaption.io.records import pair_from_record, record_from_pair, training_text
from recaption.io.safejson import RecordProblem, decode_text, dumps, parse_record
from recaption.limits import MAX_IMAGE_BYTES, MAX_RECORD_BYTES
from recaption.record import Pair

SIDECAR_EXTS = ("txt", "json")
# A tar member as read: (name, extension, its bytes where they were needed, (reject reason, why) where it cannot be used).
Member = tuple[str, str, bytes | None, tuple[str, str] | None]


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
        group: list[Member] = []
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
                    unsafe = unsafe_member_reason(member.name)
                    problem = ("unsafe_member", unsafe) if unsafe else None
                    if problem is None and not member.isfile():
                        problem = ("unsafe_member", "not a regular file (link or device)")
                    data = None
                    if problem is None and self._wanted(ext, group):
                        limit = MAX_RECORD_BYTES if ext in SIDECAR_EXTS else MAX_IMAGE_BYTES
                        if member.size > limit:
                            problem = ("too_large", f"member of {member.size} bytes > the limit of {limit}")
                        else:
                            fh = tar.extractfile(member)
                            data = fh.read(limit) if fh else b""
                    group.append((member.name, ext, data, problem))
            if current is not None:
                yield self._sample(path, current, group)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if current is not None and group:
                yield self._sample(path, current, group)
            yield broken_pair(f"{path.stem}:broken", "corrupt_shard", f"{path.name} breaks after key {current!r}: {exc}", {"file": str(path)})

    @staticmethod
    def _wanted(ext: str, group: list[Member]) -> bool:
        """Whether a member's bytes are needed: the key's first .txt, first .json and first image."""
        if ext in SIDECAR_EXTS:
            return not any(e == ext and d is not None for _, e, d, _ in group)
        if f".{ext}" in IMAGE_EXTS:
            return not any(f".{e}" in IMAGE_EXTS and d is not None for _, e, d, _ in group)
        return False

    def _sample(self, path: Path, key: str, group: list[Member]) -> Pair:
        origin: dict[str, Any] = {"file": str(path), "key": key, "members": [m for m, *_ in group]}
        fallback_id = key
        problems = [(m, p) for m, _, _, p in group if p]
        if problems:
            reason = "too_large" if all(p[0] == "too_large" for _, p in problems) else "unsafe_member"
            return broken_pair(fallback_id, reason, "; ".join(f"{m}: {p[1]}" for m, p in problems)[:300], origin)
        by_ext = {ext: data for _, ext, data, _ in group if data is not None}
        record: dict[str, Any] = {}
        try:
            if "json" in by_ext:
                record = parse_record(by_ext["json"] or b"{}", f"{key}.json")
                if not isinstance(record, dict):
                    raise RecordProblem("wrong_type", f"{key}.json is not an object")
            if "txt" in by_ext and not any(k in record for k in ("texts", "text", "caption", "captions")):
                record["texts"] = [decode_text(by_ext["txt"], f"{key}.txt")]
        except RecordProblem as exc:
            return broken_pair(fallback_id, exc.reason, str(exc), origin)
        image_ext = next((e for e in by_ext if f".{e}" in IMAGE_EXTS), None)
        image = by_ext.get(image_ext) if image_ext else None
        pair = pair_from_record(record, self.options, origin, None, fallback_id, image_bytes=image)
        if image is not None:
            pair.image_ext = safe_ext(image_ext)
        return pair


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def image_bytes_and_ext(pair: Pair) -> tuple[bytes, str]:
    """The encoded image of a kept pair, whether it travelled as bytes or as a local path
    (read as image_check reads it: a regular file, at most MAX_IMAGE_BYTES); ImageFileError
    (an OSError) where there is none."""
    if isinstance(pair.image, (bytes, bytearray)):
        return bytes(pair.image), safe_ext(pair.image_ext)
    if not isinstance(pair.image, str) or not pair.image or "://" in pair.image:
        raise ImageFileError("no_image", f"no local image for {pair.image_id} ({str(pair.image)[:200]!r})")
    return read_image_file(pair.image, MAX_IMAGE_BYTES), safe_ext(Path(pair.image).suffix.lstrip("."))


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
                # Everything that can fail comes before the first member is written.
                record = dumps(record_from_pair(pair)).encode("utf-8")
                data, ext = image_bytes_and_ext(pair)
                key = safe_key(pair.image_id, row, used)
                _add_member(tar, f"{key}.{ext}", data)
                _add_member(tar, f"{key}.txt", training_text(pair).encode("utf-8", "replace"))
                _add_member(tar, f"{key}.json", record)
                row += 1

            yield add
