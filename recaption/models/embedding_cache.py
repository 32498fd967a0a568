"""A side file of image embeddings, so that scoring new captions does not re-encode images.

One SQLite file per model hash (the hash names the weights and the preprocessing, so an
embedding is never reused across models). Rows are keyed by image id and the image's
sha256 when the image check recorded one, so a changed image under the same id is a miss.
Several worker processes share the file: SQLite's write-ahead log lets them read while one
writes, and a writer waits for another instead of failing.
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from recaption.imaging import decode_for_model, input_side
from recaption.record import Pair


class EmbeddingCache:
    def __init__(self, folder: str | Path, model_hash: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / (re.sub(r"[^\w.@-]+", "_", model_hash) + ".sqlite")
        self.db = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS embedding (key TEXT PRIMARY KEY, dim INTEGER, vector BLOB)")
        self.hits = self.misses = 0

    @staticmethod
    def key(image_id: str, sha256: str | None) -> str:
        return f"{image_id}\t{sha256 or ''}"

    def get_many(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            part = keys[start : start + 500]
            rows = self.db.execute(f"SELECT key, vector FROM embedding WHERE key IN ({','.join('?' * len(part))})", part)
            found.update((key, np.frombuffer(blob, dtype=np.float32)) for key, blob in rows)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(key, int(v.shape[-1]), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for key, v in items.items()]
        self.db.execute("BEGIN IMMEDIATE")  # one transaction: one fsync for the batch
        try:
            self.db.executemany("INSERT OR REPLACE INTO embedding VALUES (?, ?, ?)", rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


def cache_root() -> Path:
    """Where recaption keeps what it can make again: $RECAPTION_CACHE, or ~/.cache/recaption."""
    return Path(os.environ.get("RECAPTION_CACHE") or Path.home() / ".cache" / "recaption")


def default_cache_folder() -> Path:
    return cache_root() / "image-embeddings"


def cache_folder_of(cache: str | bool | None) -> Path | None:
    """``auto`` ($RECAPTION_CACHE or ~/.cache/recaption), a folder, or none/false: no cache."""
    if cache in (None, False, "none", "false"):
        return None
    return default_cache_folder() if cache == "auto" else Path(str(cache))


class CachedImageEmbeddings:
    """A CLIP-like model's L2-normalised image embeddings of pairs, read from the side cache
    where it has them. Images are decoded at the model's input side (JPEG draft decoding), the
    same way wherever an embedding is made: scoring, training the captioner, and captioning."""

    def __init__(self, scorer: Any, cache_folder: Path | None) -> None:
        self.scorer = scorer
        self.cache = EmbeddingCache(cache_folder, scorer.model_hash) if cache_folder else None
        self.decode_side = input_side(scorer.processor.image_processor)

    def of(self, pairs: list[Pair], rejected_by: str) -> tuple[list[Pair], np.ndarray]:
        """The pairs whose image could be embedded, and their embeddings (one row each); a
        pair whose image does not decode is rejected as ``rejected_by/unreadable_image``."""
        keys = [self.cache.key(p.image_id, p.scores.get("sha256")) if self.cache else "" for p in pairs]
        cached = self.cache.get_many(keys) if self.cache else {}
        todo = [p for p, k in zip(pairs, keys) if k not in cached]
        decoded, images = decode_for_model(todo, self.decode_side, rejected_by)
        fresh = dict(zip([id(p) for p in decoded], self.scorer.embed_images(images))) if images else {}
        if self.cache and fresh:
            self.cache.put_many({k: fresh[id(p)] for p, k in zip(pairs, keys) if id(p) in fresh})
        kept, rows = [], []
        for pair, key in zip(pairs, keys):
            vector = cached.get(key) if key in cached else fresh.get(id(pair))
            if vector is not None:
                kept.append(pair)
                rows.append(vector)
        return kept, np.stack(rows) if rows else np.zeros((0, 1), np.float32)
