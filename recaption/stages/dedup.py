"""Duplicates: repeated ids, exact and near images, exact and near texts.

Which copy survives is deterministic and documented:

- duplicate ``image_id``: the first record in input order keeps the id; later ones are
  rejected (``duplicate_id``).
- exact image (same sha256) and near image (perceptual hashes within ``phash_radius``
  bits): the copy with the most pixels survives, ties going to the earliest in input
  order; the others are rejected (``exact_image`` / ``near_image``) and name the survivor.
- exact text (same normalised caption) and near text (MinHash-LSH, Jaccard of character
  5-grams at least ``text_jaccard``) on *different* images: the seed's uniqueness rule. By
  default every member of a group is flagged (``scores["text_dup_count"]``,
  ``meta["text_dup_of"]`` naming the earliest); with ``text_action: reject`` all but the
  earliest are rejected (``duplicate_text``).

Near-image search never compares all pairs: a 64-bit hash within Hamming radius r of
another shares at least one of r+1 disjoint bit blocks with it exactly (pigeonhole), so
only hashes that collide on a block are compared.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np

from recaption.record import Pair
from recaption.stages.base import Decision, GlobalStage, StageError, register

_NON_WORD = re.compile(r"[^\w]+")


def normalise_text(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)  # the root is always the earliest index

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return out


def _block_masks(radius: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, mask) for radius+1 disjoint blocks covering all bits."""
    n_blocks = radius + 1
    edges = np.linspace(0, bits, n_blocks + 1).round().astype(int)
    return [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in zip(edges[:-1], edges[1:])]


def near_hash_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """All index pairs (i < j) whose 64-bit hashes differ in at most ``radius`` bits.

    Exactly equal hashes are paired through their first occurrence, so a thousand copies
    of one blank image cost a thousand comparisons, not half a million.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        return np.empty((0, 2), dtype=np.int64)
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    pairs = [np.stack([first[inverse], np.arange(len(hashes))], axis=1)]
    pairs[0] = pairs[0][pairs[0][:, 0] != pairs[0][:, 1]]
    if radius > 0 and len(uniq) > 1:
        seen: list[np.ndarray] = []
        for shift, mask in _block_masks(radius):
            block = (uniq >> np.uint64(shift)) & np.uint64(mask)
            order = np.argsort(block, kind="stable")
            sorted_block = block[order]
            # Compare each element with the next d in sort order while the block matches.
            for d in range(1, len(uniq)):
                same = sorted_block[d:] == sorted_block[:-d]
                if not same.any():
                    break
                a, b = order[:-d][same], order[d:][same]
                dist = np.bitwise_count(uniq[a] ^ uniq[b])
                close = dist <= radius
                if close.any():
                    seen.append(np.stack([np.minimum(a, b)[close], np.maximum(a, b)[close]], axis=1))
        if seen:
            uniq_pairs = np.unique(np.concatenate(seen), axis=0)
            pairs.append(np.stack([first[uniq_pairs[:, 0]], first[uniq_pairs[:, 1]]], axis=1))
    out = np.concatenate(pairs).astype(np.int64)
    return np.sort(out, axis=1)


class MinHasher:
    """MinHash signatures of character shingles, with LSH banding for candidates."""

    PRIME = (1 << 31) - 1

    def __init__(self, num_perm: int = 64, bands: int = 16, shingle: int = 5, seed: int = 1) -> None:
        if num_perm % bands:
            raise StageError("dedup: text_num_perm must be a multiple of text_bands")
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, self.PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, self.PRIME, num_perm, dtype=np.uint64)
        self.bands, self.rows, self.shingle = bands, num_perm // bands, shingle

    def shingles(self, text: str) -> set[int]:
        if len(text) <= self.shingle:
            return {zlib.crc32(text.encode())}
        return {zlib.crc32(text[i : i + self.shingle].encode()) for i in range(len(text) - self.shingle + 1)}

    def signature(self, shingles: set[int]) -> np.ndarray:
        x = np.fromiter(shingles, dtype=np.uint64, count=len(shingles)) % np.uint64(self.PRIME)
        return ((np.outer(self.a, x) + self.b[:, None]) % np.uint64(self.PRIME)).min(axis=1)

    def band_keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() + bytes([i]) for i in range(self.bands)]


@register
class Dedup(GlobalStage):
    """Reject repeated ids and duplicate images; flag (or reject) captions shared by images."""

    name = "dedup"
    BUCKET_REPRESENTATIVES = 16

    def __init__(
        self,
        *,
        ids: bool = True,
        exact_image: bool = True,
        near_image: bool = True,
        phash_radius: int = 4,
        exact_text: bool = True,
        near_text: bool = True,
        text_jaccard: float = 0.8,
        text_action: str = "flag",
        text_num_perm: int = 64,
        text_bands: int = 16,
    ) -> None:
        super().__init__()
        if text_action not in ("flag", "reject"):
            raise StageError(f"dedup.text_action must be 'flag' or 'reject', not {text_action!r}")
        if not 0 <= phash_radius <= 32:
            raise StageError("dedup.phash_radius must be between 0 and 32 bits")
        self.ids, self.exact_image, self.near_image = ids, exact_image, near_image
        self.phash_radius = phash_radius
        self.exact_text, self.near_text = exact_text, near_text
        self.text_jaccard, self.text_action = text_jaccard, text_action
        self.minhasher = MinHasher(text_num_perm, text_bands)

    def signature(self, pair: Pair) -> dict[str, Any]:
        selected = [c.text for c in pair.captions if c.selected] or pair.texts[:1]
        return {
            "id": pair.image_id,
            "sha256": pair.scores.get("sha256"),
            "phash": pair.scores.get("phash"),
            "pixels": int(pair.scores.get("width", 0)) * int(pair.scores.get("height", 0)),
            "text": normalise_text(" ".join(selected)),
        }

    def decide(self, signatures: list[tuple[str, dict[str, Any]]]) -> dict[str, Decision]:
        keys = [k for k, _ in signatures]
        sigs = [s for _, s in signatures]
        decisions: dict[str, Decision] = {}
        alive = list(range(len(sigs)))

        if self.ids:
            first_of: dict[str, int] = {}
            for i in alive:
                owner = first_of.setdefault(sigs[i]["id"], i)
                if owner != i:
                    decisions[keys[i]] = Decision(reject=("duplicate_id", f"image_id {sigs[i]['id']!r} already used by the record at {keys[owner]}"))
            alive = [i for i in alive if keys[i] not in decisions]

        def best_first(members: list[int]) -> list[int]:
            return sorted(members, key=lambda i: (-sigs[i]["pixels"], i))

        def reject_groups(uf: _UnionFind, members: list[int], reason: str) -> None:
            for group in uf.groups().values():
                if len(group) < 2:
                    continue
                ranked = best_first([members[g] for g in group])
                keeper = ranked[0]
                for i in ranked[1:]:
                    decisions[keys[i]] = Decision(reject=(reason, f"duplicate of {sigs[keeper]['id']!r}"))

        if self.exact_image:
            members = [i for i in alive if sigs[i]["sha256"]]
            uf = _UnionFind(len(members))
            first_with: dict[str, int] = {}
            for pos, i in enumerate(members):
                uf.union(first_with.setdefault(sigs[i]["sha256"], pos), pos)
            reject_groups(uf, members, "exact_image")
            alive = [i for i in alive if keys[i] not in decisions]

        if self.near_image:
            members = [i for i in alive if sigs[i]["phash"]]
            hashes = np.array([int(sigs[i]["phash"], 16) for i in members], dtype=np.uint64)
            uf = _UnionFind(len(members))
            for a, b in near_hash_pairs(hashes, self.phash_radius):
                uf.union(int(a), int(b))
            reject_groups(uf, members, "near_image")
            alive = [i for i in alive if keys[i] not in decisions]

        if self.exact_text or self.near_text:
            self._text_groups(keys, sigs, alive, decisions)
        return decisions

    def _text_groups(self, keys: list[str], sigs: list[dict[str, Any]], alive: list[int], decisions: dict[str, Decision]) -> None:
        members = [i for i in alive if sigs[i]["text"]]
        uf = _UnionFind(len(members))
        if self.exact_text:
            first_with: dict[str, int] = {}
            for pos, i in enumerate(members):
                uf.union(first_with.setdefault(sigs[i]["text"], pos), pos)
        if self.near_text:
            shingles = [self.minhasher.shingles(sigs[i]["text"]) for i in members]
            buckets: dict[bytes, list[int]] = {}
            for pos, sh in enumerate(shingles):
                for band in self.minhasher.band_keys(self.minhasher.signature(sh)):
                    bucket = buckets.setdefault(band, [])
                    for other in bucket:
                        if uf.find(other) != uf.find(pos):
                            inter = len(shingles[other] & sh)
                            if inter / (len(shingles[other]) + len(sh) - inter) >= self.text_jaccard:
                                uf.union(other, pos)
                    # A bucket of many near-identical texts needs only a few representatives.
                    if len(bucket) < self.BUCKET_REPRESENTATIVES:
                        bucket.append(pos)
        for group in uf.groups().values():
            if len(group) < 2:
                continue
            ordered = sorted(members[g] for g in group)
            first = ordered[0]
            for i in ordered:
                d = Decision(scores={"text_dup_count": len(ordered)})
                if i != first:
                    d.meta["text_dup_of"] = sigs[first]["id"]
                    if self.text_action == "reject":
                        d.reject = ("duplicate_text", f"same caption as {sigs[first]['id']!r}")
                decisions[keys[i]] = d
