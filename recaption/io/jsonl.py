"""JSONL: the seed schema ``{"image_id", "image_path", "texts": [...], "quality_score"}``.

Input is one ``.jsonl`` file or a folder of them. Shards are runs of ``shard_size`` lines,
found by a byte-offset scan so that a 10 GB file is never held in memory. ``image_path``
is relative to the JSONL file's folder unless ``--image-root`` says otherwise.

Output: ``part-NNNNN.jsonl`` per shard; images that a stage rewrote (or that arrived as
bytes) go to the folder ``part-NNNNN/`` beside it and ``image_path`` is relative to the
JSONL's folder; untouched images keep pointing at their original, absolute path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recaption.io.base import (
    InputShard,
    Reader,
    Writer,
    atomic_path,
    broken_pair,
    register_reader,
    register_writer,
    safe_key,
    shard_name,
)
from recaption.io.records import pair_from_record, record_from_pair
from recaption.record import Pair


def line_offsets(path: Path, every: int) -> list[tuple[int, int, int]]:
    """(start byte, first line number, line count) for runs of ``every`` lines."""
    runs: list[tuple[int, int, int]] = []
    start, first, count, pos, line_no = 0, 1, 0, 0, 0
    with open(path, "rb") as fh:
        for line in fh:
            line_no += 1
            if count == 0:
                start, first = pos, line_no
            count += 1
            pos += len(line)
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
            for n in range(shard.spec["lines"]):
                raw = fh.readline()
                line_no = shard.spec["first_line"] + n
                origin = {"file": str(path), "line": line_no}
                fallback_id = f"{path.stem}:{line_no}"
                if not raw.strip():
                    continue  # a blank line is not a record
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield broken_pair(fallback_id, "non_utf8", f"line {line_no}: {exc}", origin)
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield broken_pair(fallback_id, "malformed_json", f"line {line_no}: {exc.msg} at column {exc.colno}", origin)
                    continue
                yield pair_from_record(record, self.options, origin, path.parent, fallback_id)


def write_jsonl(path: Path, records: Iterator[dict] | list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


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
                if isinstance(pair.image, (bytes, bytearray)):
                    name = f"{safe_key(pair.image_id, row, used)}.{pair.image_ext or 'jpg'}"
                    (tmp_dir / name).write_bytes(pair.image)
                    image_path = f"{shard}/{name}"
                else:
                    image_path = pair.image
                fh.write(json.dumps(record_from_pair(pair, image_path=image_path), ensure_ascii=False) + "\n")
                row += 1

            yield add
        # A shard whose images all stayed where they were needs no image folder.
        if image_dir.is_dir() and not any(image_dir.iterdir()):
            image_dir.rmdir()
