"""Near texts: normalisation, a 64-bit text hash, and MinHash-LSH over character shingles."""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np

_NON_WORD = re.compile(r"[^\w]+")


def normalise_text(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class MinHasher:
    """MinHash signatures of character shingles, and LSH band hashes for candidates."""

    PRIME = (1 << 31) - 1

    def __init__(self, num_perm: int = 64, bands: int = 16, shingle: int = 5, seed: int = 1) -> None:
        if num_perm % bands:
            raise ValueError("text_num_perm must be a multiple of text_bands")
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, self.PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, self.PRIME, num_perm, dtype=np.uint64)
        self.mix = rng.integers(1, 2**63, num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.num_perm, self.bands, self.rows, self.shingle = num_perm, bands, num_perm // bands, shingle

    def shingles(self, text: str) -> np.ndarray:
        step = self.shingle
        grams = [text] if len(text) <= step else [text[i : i + step] for i in range(len(text) - step + 1)]
        return np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams))

    def signature(self, text: str) -> np.ndarray:
        x = self.shingles(text) % np.uint64(self.PRIME)
        return ((np.outer(self.a, x) + self.b[:, None]) % np.uint64(self.PRIME)).min(axis=1).astype(np.uint32)

    def band_hash(self, minhashes: np.ndarray, band: int) -> np.ndarray:
        """One 64-bit hash per row: two texts share it when that band's MinHash values agree."""
        cols = slice(band * self.rows, (band + 1) * self.rows)
        weighted = minhashes[:, cols].astype(np.uint64) * self.mix[cols]  # wraps mod 2**64, as intended
        return weighted.sum(axis=1, dtype=np.uint64)
