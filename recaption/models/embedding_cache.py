"""A side file of image embeddings, so that scoring new captions does not re-encode images.

One SQLite file per model hash (the hash names the weights and the preprocessing, so an
embedding is never reused across models). Rows are keyed by image id and the image's
sha256 when the image check recorded one, so a changed image under the same id is a miss.
Several worker processes share the file: SQLite's write-ahead log lets them read while one
writes, and a writer waits for another instead of failing.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import numpy as np


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
