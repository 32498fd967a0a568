"""An image folder with captions beside the images: sidecar ``.txt`` files (the kohya-style
diffusion-training convention) or Hugging Face's ``metadata.jsonl`` / ``metadata.csv``.

``photos/cat.jpg`` + ``photos/cat.txt`` (+ optional ``photos/cat.json`` metadata) is one
pair whose id is the image's path below the folder without its extension. A
``metadata.jsonl`` or ``metadata.csv`` in any folder (HF's ``imagefolder``, diffusers'
training scripts) gives the images below that folder their columns by ``file_name``, relative
to it: ``text`` / ``caption`` become the texts, the rest the record's fields. A metadata row
that cannot be read, or that names no image there, is a reject of its own; nothing is lost.
An image with no text is still a record (rejected as ``no_text`` by ``clean_text`` unless
the recipe keeps image-only pairs for captioning from scratch).

Output: one folder per shard, ``part-NNNNN/KEY.<ext>`` + ``KEY.txt`` (the training
caption) + ``KEY.json`` (the whole record), and ``metadata.jsonl`` (``file_name``, ``text``,
``image_id``) so that ``load_dataset("imagefolder", data_dir=...)`` and diffusers read the
captions.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recaption.io.atomic import atomic_path
from recaption.io.base import (
    ID_FIELDS,
    IMAGE_EXTS,
    READ_STAGE,
    SKIPPED_FOLDERS,
    InputError,
    InputShard,
    Reader,
    Writer,
    broken_pair,
    register_reader,
    register_writer,
    safe_key,
    shard_name,
)
from recaption.io.jsonl import iter_lines
from recaption.io.records import pair_from_record, record_from_pair, record_from_sidecars, training_text
from recaption.io.safejson import RecordProblem, dumps, parse_record, read_small_file
from recaption.io.webdataset import image_bytes_and_ext
from recaption.limits import MAX_RECORD_BYTES
from recaption.record import Pair

METADATA_FILES = ("metadata.jsonl", "metadata.csv")


@dataclass
class FolderMetadata:
    """Hugging Face imagefolder metadata below a root: rows by image path, and the rows that
    could not be used (each a reject: (id, reason, detail, origin))."""

    rows: dict[str, dict] = field(default_factory=dict)
    problems: list[tuple[str, str, str, dict, dict | None]] = field(default_factory=list)  # the row itself, where it was read
    where: dict[str, str] = field(default_factory=dict)  # image -> the file and line whose row it took


def _metadata_rows(path: Path) -> Iterator[tuple[int, dict | RecordProblem]]:
    """(line, row) of a metadata.jsonl or metadata.csv; a RecordProblem for a row that cannot be read."""
    if path.suffix == ".jsonl":
        with open(path, "rb") as fh:
            for n, (line, _) in enumerate(iter_lines(fh), start=1):
                if line is None:
                    yield n, RecordProblem("record_too_large", f"line {n} is over {MAX_RECORD_BYTES} bytes")
                elif line.strip():
                    try:
                        row = parse_record(line, f"{path.name} line {n}")
                        yield n, row if isinstance(row, dict) else RecordProblem("wrong_type", f"line {n} is not an object")
                    except RecordProblem as exc:
                        yield n, exc
        return
    csv.field_size_limit(MAX_RECORD_BYTES)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the generator's rows
    except OSError as exc:
        yield 0, RecordProblem("unreadable_file", f"{path.name}: {exc.strerror or exc}")
        return
    with fh:
        header: list[str] | None = None
        for n, raw in csv_records(fh, MAX_RECORD_BYTES):
            if raw is None:
                yield n, RecordProblem("record_too_large", f"{path.name} row at line {n} is over {MAX_RECORD_BYTES} bytes")
                continue
            try:
                text = raw.decode("utf-8-sig" if header is None else "utf-8")
                if not text.strip():
                    continue
                rows = [r for r in csv.reader(io.StringIO(text)) if r]  # more than one where lines end in CR alone
            except (UnicodeDecodeError, csv.Error) as exc:
                if header is None:  # no columns: nothing of the file can be read
                    yield 0, RecordProblem("malformed_csv", f"{path.name}: its header: {exc}")
                    return
                yield n, RecordProblem("malformed_csv", f"{path.name} line {n}: {exc}")
                continue
            for values in rows:
                if header is None:
                    header = values
                    continue
                yield n, {**dict.fromkeys(header[len(values):]), **dict(zip(header, values))}


def csv_records(fh: Any, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(first line, bytes) of each CSV record of a binary file, a record ending at a newline
    outside quotes; None for a record over ``limit`` bytes, which is read past, never held
    (one huge field costs its row, not the file). Linear: quotes are counted between newlines."""
    parts: list[bytes] = []
    size, quoted, line, start = 0, False, 1, 1
    over = False
    while chunk := fh.read(1 << 20):
        pos = 0
        while (end := chunk.find(b"\n", pos)) != -1:
            piece = chunk[pos : end + 1]
            quoted ^= piece.count(b'"') % 2 == 1
            line += 1
            size += len(piece)
            over = over or size > limit
            if not over:
                parts.append(piece)
            pos = end + 1
            if not quoted:
                yield start, None if over else b"".join(parts)
                parts, size, over, start = [], 0, False, line
        rest = chunk[pos:]
        quoted ^= rest.count(b'"') % 2 == 1
        size += len(rest)
        over = over or size > limit
        if not over:
            parts.append(rest)
    if size:
        yield start, None if over else b"".join(parts)


def read_folder_metadata(root: Path, images: set[str]) -> FolderMetadata:
    """Every metadata.jsonl / metadata.csv below ``root``, joined to the images by file_name."""
    found = FolderMetadata()
    for path in sorted(p for name in METADATA_FILES for p in root.rglob(name) if p.is_file()):
        base = path.parent.relative_to(root)
        for n, row in _metadata_rows(path):
            origin = {"file": str(path), "line": n}
            key = f"{base.as_posix()}/{path.name}:{n}".lstrip("./")
            if isinstance(row, RecordProblem):
                found.problems.append((key, row.reason, str(row), origin, None))
                continue
            name = row.pop("file_name", None)
            if not isinstance(name, str) or not name:
                found.problems.append((key, "missing_field", f"{path.name} line {n} has no file_name", origin, row))
                continue
            rel = (base / name).as_posix()
            if rel.startswith("../") or "/../" in rel or rel not in images:
                found.problems.append((key, "missing_file", f"{path.name} line {n} names {name!r}, which is no image there", origin, row))
                continue
            if rel in found.rows:  # the first row naming an image is its row; a later one is a reject of its own
                detail = f"{path.name} line {n} names {name!r} again: {found.where[rel]} gave that image its row"
                found.problems.append((key, "duplicate_file_name", detail, origin, {"file_name": name, **row}))
                continue
            found.rows[rel] = row
            found.where[rel] = f"{path.relative_to(root).as_posix()} line {n}"
    return found


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not SKIPPED_FOLDERS & set(p.relative_to(folder).parts)
    )


@register_reader
class ImageFolderReader(Reader):
    format = "imagefolder"
    _folder_metadata: FolderMetadata | None = None  # read once per reader, on its first shard

    def plan(self) -> list[InputShard]:
        if not self.path.is_dir():
            raise InputError(f"{self.path} is not a folder")
        images = [str(p.relative_to(self.path)) for p in list_images(self.path)]
        if not images:
            raise InputError(f"{self.path} holds no images ({', '.join(IMAGE_EXTS)})")
        size = self.options.shard_size
        return [
            InputShard(i, shard_name(i), {"root": str(self.path), "images": images[start : start + size], "records": len(images[start : start + size])})
            for i, start in enumerate(range(0, len(images), size))
        ]

    def _metadata(self, root: Path) -> FolderMetadata:
        if self._folder_metadata is None:
            self._folder_metadata = read_folder_metadata(root, {str(p.relative_to(root).as_posix()) for p in list_images(root)})
        return self._folder_metadata

    def read(self, shard: InputShard) -> Iterator[Pair]:
        root = Path(shard.spec["root"])
        metadata = self._metadata(root)
        if shard.index == 0:  # the metadata rows that name no image, once
            for key, reason, detail, origin, row in metadata.problems:
                if row is None:
                    yield broken_pair(key, reason, detail, origin)
                    continue
                # The row as read goes with its reject (its caption is not lost); its image
                # stays the one the kept row holds, so it is never read twice.
                pair = pair_from_record({k: v for k, v in row.items() if k not in ("image", "image_path", "path", "file_name")},
                                        self.options, origin, None, key)
                if pair.reject is None:
                    pair.reject_with(READ_STAGE, reason, detail)
                yield pair
        for rel in shard.spec["images"]:
            image = root / rel
            image_id = Path(rel).with_suffix("").as_posix()
            origin = {"file": str(image)}
            sidecar_json = image.with_suffix(".json")
            sidecar_txt = image.with_suffix(".txt")
            try:
                record = record_from_sidecars(
                    read_small_file(sidecar_json, sidecar_json.name) if sidecar_json.exists() else None,
                    read_small_file(sidecar_txt, sidecar_txt.name) if sidecar_txt.exists() else None,
                    image.with_suffix("").name,
                    metadata.rows.get(Path(rel).as_posix(), {}),
                )
            except RecordProblem as exc:
                yield broken_pair(image_id, exc.reason, str(exc), origin)
                continue
            if not any(k in record for k in ID_FIELDS):
                record["image_id"] = image_id
            # The image is the file beside the sidecars, whatever a copied .json says.
            for name in ("image_path", "path", "image", "jpg", "png", "webp"):
                record.pop(name, None)
            record["image_path"] = str(image)
            yield pair_from_record(record, self.options, origin, None, image_id)


@register_writer
class ImageFolderWriter(Writer):
    format = "imagefolder"
    suffix = ""

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        with atomic_path(self.target(shard), is_dir=True) as tmp, open(tmp / "metadata.jsonl", "w", encoding="utf-8") as metadata:
            row = 0
            used: set[str] = set()

            def add(pair: Pair) -> None:
                nonlocal row
                # Everything that can fail comes before the first byte is written.
                record = dumps(record_from_pair(pair))
                data, ext = image_bytes_and_ext(pair)
                key = safe_key(pair.image_id, row, used)
                text = training_text(pair)
                line = dumps({"file_name": f"{key}.{ext}", "text": text, "image_id": pair.image_id})
                (tmp / f"{key}.{ext}").write_bytes(data)
                (tmp / f"{key}.txt").write_text(text, encoding="utf-8", errors="replace")
                (tmp / f"{key}.json").write_text(record, encoding="utf-8")
                metadata.write(line + "\n")
                row += 1

            yield add
