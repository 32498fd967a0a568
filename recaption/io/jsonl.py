"""JSONL: the seed schema ``{"image_id", "image_path", "texts": [...], "quality_score"}``.

Input is one ``.jsonl`` file or a folder of them. Shards are runs of ``shard_size`` lines,
found by a byte-offset scan so that a 10 GB file is never held in memory. ``image_path``
is relative to the JSONL file's folder unless ``--image-root`` says otherwise.

Output: ``part-NNNNN.jsonl`` per shard; images that a stage rewrote (or that arrived as
bytes) go to the folder ``part-NNNNN/`` beside it and ``image_path`` is relative to the
JSONL's folder; untouched images keep pointing at their original, absolute path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from recaption.io.atomic import atomic_path
from recaption.io.base import (
    InputShard,
    Reader,
    Writer,
    broken_pair,
    register_reader,
    register_writer,
    safe_ext,
    safe_key,
    shard_name,
)
from recaption.io.records import pair_from_record, record_from_pair
from recaption.io.safejson import RecordProblem, dumps, parse_record
from recaption.limits import MAX_RECORD_BYTES
from recaption.record import Pair

_CHUNK = 1 << 20
_EOL = re.compile(rb"\r\n|\r|\n")


def iter_lines(fh: BinaryIO, limit: int = MAX_RECORD_BYTES) -> Iterator[tuple[bytes | None, int]]:
    """(line, bytes it took) for each line from the file's position on; ``None`` for a line
    longer than ``limit``, which is skipped without ever being held whole.

    Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac files), as universal newlines do.
    """
    buf = b""
    over = False  # inside a line already known to be too long
    dropped = 0  # bytes of the current line let go of so far
    while True:
        chunk = fh.read(_CHUNK)
        eof = not chunk
        buf += chunk
        pos = 0
        while (m := _EOL.search(buf, pos)) is not None:
            if m.group() == b"\r" and m.end() == len(buf) and not eof:
                break  # a \r at the end of what is read may be the first half of \r\n
            line = buf[pos : m.start()]
            yield (None if over or len(line) > limit else line), dropped + m.end() - pos
            pos, over, dropped = m.end(), False, 0
        rest = buf[pos:]
        if eof:
            if rest or over:
                yield (None if over or len(rest) > limit else rest), dropped + len(rest)
            return
        if len(rest) > limit:
            over, dropped, rest = True, dropped + len(rest), b""
        buf = rest


def line_offsets(path: Path, every: int) -> list[tuple[int, int, int]]:
    """(start byte, first line number, line count) for runs of ``every`` lines."""
    runs: list[tuple[int, int, int]] = []
    start, first, count, pos, line_no = 0, 1, 0, 0, 0
    with open(path, "rb") as fh:
        for _, length in iter_lines(fh):
            line_no += 1
            if count == 0:
                start, first = pos, line_no
            count += 1
            pos += length
            if count == every:
                runs.append((start, first, count))
                count = 0
    if count:
        runs.append((start, first, count))
    return runs


@register_reader
class JsonlReader(Reader):
    format = "jsonl"

    def plan(self) -> list[InputShard]:
        shards: list[InputShard] = []
        for path in self.input_files("*.jsonl", ".jsonl files"):
            for start, first, count in line_offsets(path, self.options.shard_size):
                i = len(shards)
                shards.append(InputShard(i, shard_name(i), {"file": str(path), "offset": start, "first_line": first, "lines": count, "records": count}))
        return shards

    def read(self, shard: InputShard) -> Iterator[Pair]:
        path = Path(shard.spec["file"])
        with open(path, "rb") as fh:
            fh.seek(shard.spec["offset"])
            lines = iter_lines(fh)
            for n in range(shard.spec["lines"]):
                raw, length = next(lines, (b"", 0))
                line_no = shard.spec["first_line"] + n
                origin = {"file": str(path), "line": line_no}
                fallback_id = f"{path.stem}:{line_no}"
                if raw is None:
                    yield broken_pair(fallback_id, "too_large", f"line {line_no} has {length} bytes > the limit of {MAX_RECORD_BYTES}", origin)
                    continue
                if not raw.strip():
                    continue  # a blank line is not a record
                try:
                    record = parse_record(raw, f"line {line_no}")
                except RecordProblem as exc:
                    yield broken_pair(fallback_id, exc.reason, str(exc), origin)
                    continue
                yield pair_from_record(record, self.options, origin, path.parent, fallback_id)


def write_jsonl(path: Path, records: Iterator[dict] | list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(dumps(rec) + "\n")


@register_writer
class JsonlWriter(Writer):
    format = "jsonl"
    suffix = ".jsonl"

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        image_dir = self.out_dir / shard
        with atomic_path(image_dir, is_dir=True) as tmp_dir, atomic_path(self.target(shard)) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            row = 0
            used: set[str] = set()

            def add(pair: Pair) -> None:
                nonlocal row
                has_bytes = isinstance(pair.image, (bytes, bytearray))
                name = f"{safe_key(pair.image_id, row, used)}.{safe_ext(pair.image_ext)}" if has_bytes else ""
                # The line is made before anything is written: a record that cannot be written
                # leaves no image behind.
                line = dumps(record_from_pair(pair, image_path=f"{shard}/{name}" if has_bytes else pair.image)) + "\n"
                if has_bytes:
                    (tmp_dir / name).write_bytes(pair.image)
                fh.write(line)
                row += 1

            yield add
        # A shard whose images all stayed where they were needs no image folder.
        if image_dir.is_dir() and not any(image_dir.iterdir()):
            image_dir.rmdir()
