"""Reference indexes: the image hashes of pairs kept before, or of evaluation images, so that a
run can reject what an earlier run already kept (``dedup: {against: [...]}``) and keep
evaluation images out of training data (``dedup: {eval_sets: [...]}``).

An index is one Parquet file (``recaption index build``): per image its source, id, the first
64 bits of its sha256, and its perceptual hash and mirror hash (as the image check computes
them). Where a source already holds the hashes (a recaption run's output) they are read, not
recomputed; other images are decoded as the image check decodes them (``imaging.decode_checked``)
and hashed by the same functions (``dedup.image_hashes``), so an index and a run always hash
alike. A dedup option may also name a run folder or dataset directly: it is then
indexed in memory when the decision is made.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from recaption.dedup.image_hashes import image_hashes, thumbnail32
from recaption.errors import RecaptionError
from recaption.imaging import ImageFileError, decode_checked, record_image_bytes, upright_rgb
from recaption.io import open_reader
from recaption.io.atomic import atomic_path
from recaption.io.base import ReaderOptions
from recaption.io.run_folder import kept_data
from recaption.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from recaption.record import Pair

INDEX_KEY = b"recaption_index"
INDEX_VERSION = 1
BATCH = 64


class ReferenceIndexError(RecaptionError):
    """An index cannot be built or read; the message names the path and what to do."""


@dataclass
class ReferenceIndex:
    """Hash columns of the indexed images; ids stay an Arrow column (compact) until named."""

    source: np.ndarray  # int32: position in ``sources``
    ids: pa.Array
    sha: np.ndarray  # uint64, 0 where unknown
    phash: np.ndarray  # uint64
    has_phash: np.ndarray  # bool
    mirror: np.ndarray  # uint64
    has_mirror: np.ndarray  # bool
    sources: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sha)

    def name(self, row: int) -> tuple[str, str]:
        """(source name, image id) of an indexed image."""
        return self.sources[int(self.source[row])]["name"], str(self.ids[int(row)].as_py())

    def to_table(self) -> pa.Table:
        table = pa.table({
            "source": pa.array(self.source, pa.int32()), "id": self.ids, "sha": pa.array(self.sha, pa.uint64()),
            "phash": pa.array(self.phash, pa.uint64()), "has_phash": pa.array(self.has_phash),
            "mirror": pa.array(self.mirror, pa.uint64()), "has_mirror": pa.array(self.has_mirror),
        })
        meta = {"version": INDEX_VERSION, "sources": self.sources}
        return table.replace_schema_metadata({INDEX_KEY: json.dumps(meta).encode()})

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            pq.write_table(self.to_table(), tmp)

    @staticmethod
    def concat(parts: list[ReferenceIndex]) -> ReferenceIndex:
        sources: list[dict[str, Any]] = []
        codes = []
        for part in parts:
            codes.append(part.source + len(sources))
            sources.extend(part.sources)
        return ReferenceIndex(
            np.concatenate(codes) if codes else np.zeros(0, np.int32),
            pa.concat_arrays([p.ids for p in parts]) if parts else pa.array([], pa.string()),
            *(np.concatenate([getattr(p, c) for p in parts]) if parts else np.zeros(0, t)
              for c, t in (("sha", np.uint64), ("phash", np.uint64), ("has_phash", bool), ("mirror", np.uint64), ("has_mirror", bool))),
            sources=sources,
        )


def is_index_file(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file() or p.suffix != ".parquet":
        return False
    try:
        return INDEX_KEY in (pq.read_schema(p).metadata or {})
    except (OSError, pa.ArrowInvalid):
        return False


# Each column of an index file and its type; a file is data, and is checked before it is used.
COLUMNS = {"source": pa.int32(), "id": pa.string(), "sha": pa.uint64(), "phash": pa.uint64(), "has_phash": pa.bool_(),
           "mirror": pa.uint64(), "has_mirror": pa.bool_()}


def read_index(path: str | Path) -> ReferenceIndex:
    """An index file, checked whole (columns, types, no nulls, sources that name every row's
    source): a damaged or crafted file is one ReferenceIndexError naming what is wrong."""
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[INDEX_KEY])
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise ReferenceIndexError(f"{path}: not a recaption index ({type(exc).__name__}: {exc}); build one with `recaption index build`") from exc

    def bad(what: str) -> ReferenceIndexError:
        return ReferenceIndexError(f"{path}: a damaged recaption index ({what}); rebuild it with `recaption index build`")

    if not isinstance(meta, dict) or meta.get("version") != INDEX_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise ReferenceIndexError(f"{path}: index version {version!r} is not {INDEX_VERSION}; rebuild it with `recaption index build`")
    sources = meta.get("sources")
    if not isinstance(sources, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in sources):
        raise bad("its sources are not a list of named sources")
    col = {}
    for name, kind in COLUMNS.items():
        if name not in table.column_names:
            raise bad(f"no column {name!r}")
        try:
            col[name] = table.column(name).combine_chunks().cast(kind)
        except (pa.ArrowException, ValueError) as exc:
            raise bad(f"column {name!r} is {table.schema.field(name).type}, not {kind}: {str(exc)[:100]}") from None
        if col[name].null_count:
            raise bad(f"column {name!r} holds {col[name].null_count} nulls")
    codes = col["source"].to_numpy().astype(np.int32)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(sources)):
        raise bad(f"rows name source {int(codes.max() if codes.max() >= len(sources) else codes.min())}, and it lists {len(sources)}")
    counts = np.bincount(codes, minlength=len(sources)) if len(codes) else np.zeros(len(sources), int)
    return ReferenceIndex(
        codes, col["id"],
        col["sha"].to_numpy(), col["phash"].to_numpy(), col["has_phash"].to_numpy(zero_copy_only=False),
        col["mirror"].to_numpy(), col["has_mirror"].to_numpy(zero_copy_only=False),
        sources=[_source_entry(s, int(n)) for s, n in zip(sources, counts)],
    )


def _source_entry(source: dict[str, Any], rows: int) -> dict[str, Any]:
    """A source as the file lists it, with every key the tools read, of the type they read:
    its record count is the rows it has, whatever the file claims."""
    skipped = source.get("skipped")
    return {
        "name": source["name"][:200], "path": str(source.get("path", ""))[:1000],
        "kind": source.get("kind") if source.get("kind") in ("kept", "eval") else "kept", "records": rows,
        "skipped": {str(k)[:100]: v for k, v in skipped.items() if isinstance(v, int) and not isinstance(v, bool)} if isinstance(skipped, dict) else {},
    }


_HASH64 = re.compile(r"[0-9a-fA-F]{1,16}")  # 64 bits as hex, as the image check stores them


def stored_hashes(pair: Pair) -> tuple[int, int | None, int | None]:
    """(sha64, phash, mirror hash) from what the image check stored; 0 / None where missing."""
    sha = pair.scores.get("sha256") or ""
    phash, mirror = pair.scores.get("phash"), pair.scores.get("phash_mirror")
    # A stored score is data: anything but hex of 64 bits at most (a 40-digit phash) counts as
    # none, and the image is hashed again.
    if not isinstance(sha, str) or not (sha == "" or _HASH64.fullmatch(sha[:16])):
        return 0, None, None
    if any(h is not None and h != "" and not (isinstance(h, str) and _HASH64.fullmatch(h)) for h in (phash, mirror)):
        return 0, None, None
    return (int(sha[:16], 16) if sha else 0, int(phash, 16) if phash else None, int(mirror, 16) if mirror else None)


class _Builder:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.sha: list[int] = []
        self.phash: list[int] = []
        self.has_phash: list[bool] = []
        self.mirror: list[int] = []
        self.has_mirror: list[bool] = []

    def add(self, image_id: str, sha: int, phash: int | None, mirror: int | None) -> None:
        self.ids.append(image_id)
        self.sha.append(sha)
        self.phash.append(phash or 0)
        self.has_phash.append(phash is not None)
        self.mirror.append(mirror or 0)
        self.has_mirror.append(mirror is not None)

    def index(self, source: dict[str, Any]) -> ReferenceIndex:
        return ReferenceIndex(
            np.zeros(len(self.ids), np.int32), pa.array(self.ids, pa.string()), np.array(self.sha, np.uint64),
            np.array(self.phash, np.uint64), np.array(self.has_phash, bool), np.array(self.mirror, np.uint64),
            np.array(self.has_mirror, bool), sources=[source],
        )


def _pairs_of(path: Path, fmt: str | None, options: ReaderOptions) -> Iterator[Pair]:
    reader = open_reader(kept_data(path), fmt, options)
    for shard in reader.plan():
        yield from reader.pairs(shard)


HASHED_AS = "image_check"  # an image that will not decode is skipped for the image check's reason, named as a run names it


def hash_image(pair: Pair) -> None:
    """Store the hashes the image check stores (sha256, phash, phash_mirror) on a pair it never
    saw. Every decodable image is hashed, whatever its size or shape: an evaluation image that a
    training run would reject as too small is still one a copy of must not train on."""
    try:
        data = record_image_bytes(pair.image, MAX_IMAGE_BYTES)
        img, _, _, orientation, _ = decode_checked(data, MAX_IMAGE_PIXELS, may_draft=True)
        rgb, _ = upright_rgb(img, orientation, (255, 255, 255))
    except ImageFileError as exc:
        pair.reject_with(HASHED_AS, exc.reason, str(exc))
        return
    phash, mirror, _ = image_hashes(rgb, thumbnail32(rgb), windows=False)
    pair.scores.update({"sha256": hashlib.sha256(data).hexdigest(), "phash": phash, "phash_mirror": mirror})


def index_source(path: str | Path, name: str | None = None, kind: str = "kept", fmt: str | None = None,
                 options: ReaderOptions | None = None, progress: bool = False) -> ReferenceIndex:
    """Index one source: an index file (read), a run folder or any readable dataset (hashed)."""
    path = Path(path)
    if not path.exists():
        raise ReferenceIndexError(f"{path}: no such file or folder")
    if is_index_file(path):
        return read_index(path)
    built, skipped = _Builder(), Counter[str]()
    bar = None
    if progress:

        bar = tqdm(desc=f"indexing {path.name}", unit="img", file=sys.stderr)
    batch: list[Pair] = []

    def flush() -> None:
        for pair in batch:
            if pair.reject is None and stored_hashes(pair)[0] == 0:
                hash_image(pair)
            if pair.reject is not None:
                skipped[pair.reject.key] += 1
                continue
            built.add(pair.image_id, *stored_hashes(pair))
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    try:
        for pair in _pairs_of(path, fmt, options or ReaderOptions()):
            batch.append(pair)
            if len(batch) == BATCH:
                flush()
        flush()
    except RecaptionError as exc:
        raise ReferenceIndexError(f"{path}: {exc}") from exc
    finally:
        if bar is not None:
            bar.close()
    source = {"name": name or path.name, "path": str(path), "kind": kind, "records": len(built.ids), "skipped": dict(skipped)}
    return built.index(source)


def cached_references(paths: tuple[str, ...], kind: str) -> ReferenceIndex:
    """``load_references``, once per process while the files stay the same: every shard of a
    run checks against the same references."""
    stamps = tuple(Path(p).stat().st_mtime_ns if Path(p).exists() else 0 for p in paths)
    return _cached_references(paths, stamps, kind)


@functools.lru_cache(maxsize=4)
def _cached_references(paths: tuple[str, ...], stamps: tuple[int, ...], kind: str) -> ReferenceIndex:
    return load_references(list(paths), kind)


def load_references(paths: list[str], kind: str) -> ReferenceIndex:
    """The union of several sources (index files, run folders, datasets); a source with no
    image to check against is a wrong path, not an empty reference."""
    parts = []
    for path in paths:
        part = index_source(path, kind=kind)
        if not len(part):
            skipped = ", ".join(f"{k}: {v}" for s in part.sources for k, v in sorted(s.get("skipped", {}).items()))
            raise ReferenceIndexError(f"{path}: holds no image to check against" + (f" ({skipped})" if skipped else ""))
        parts.append(part)
    return ReferenceIndex.concat(parts)
