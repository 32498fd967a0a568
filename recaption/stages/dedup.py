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


DIRECT_TABLE_BITS = 22  # blocks up to this wide are looked up in a table (4M entries), not searched


def _blocks(n_blocks: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of ``n_blocks`` disjoint bit blocks covering all bits."""
    edges = np.linspace(0, bits, n_blocks + 1).round().astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]


def _block_plan(n: int, radius: int) -> tuple[int, int]:
    """Choose (blocks, tolerance) for multi-index hashing by expected seconds.

    Two hashes within ``radius`` bits have, among ``m`` disjoint blocks, one block within
    ``radius // m`` bits. Exact blocks (m = radius + 1) need one lookup per block, but
    random collisions in short blocks grow as n^2 / 2^bits. Blocks matched within one bit
    (about half as many, twice as long) need a lookup per bit and a table per block, but
    almost never collide by chance, so their cost stays linear. The constants are seconds
    per unit of work measured on a 2-core x86 machine (benchmarks/bench_near_dup.py); only
    their ratio matters.
    """
    exact_m = radius + 1
    exact_cost = exact_m * n * 4e-7 + exact_m * n * n / 2 ** (64 / exact_m) * 3.3e-8
    tolerant_m = -(-(radius + 1) // 2)
    bits = 64 / tolerant_m
    if radius // tolerant_m > 1 or bits > DIRECT_TABLE_BITS:
        return exact_m, 0
    tolerant_cost = tolerant_m * 2**bits * 1.5e-8 + tolerant_m * (bits + 1) * n * 3e-8
    return (exact_m, 0) if exact_cost <= tolerant_cost else (tolerant_m, 1)


def near_hash_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """Index pairs (i < j) linking every group of 64-bit hashes within ``radius`` bits.

    Exactly equal hashes are linked through their first occurrence, so a thousand copies
    of one blank image cost a thousand pairs, not half a million. Candidates come from
    multi-index hashing (see ``_block_plan``) and are verified by their true distance.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        return np.empty((0, 2), dtype=np.int64)
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    exact = np.stack([first[inverse], np.arange(len(hashes))], axis=1)
    pairs = [exact[exact[:, 0] != exact[:, 1]]]
    n = len(uniq)
    if radius > 0 and n > 1:
        n_blocks, tolerance = _block_plan(n, radius)
        found: list[np.ndarray] = []
        everyone = np.arange(n)
        for shift, width in _blocks(n_blocks):
            keys = ((uniq >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            order = np.argsort(keys, kind="stable")
            if width <= DIRECT_TABLE_BITS:
                # A direct-address table: bucket start and size for every block value.
                sizes = np.bincount(keys, minlength=1 << width)
                begins = np.cumsum(sizes) - sizes
            else:
                sorted_keys = keys[order]
            flips = [0] + ([1 << b for b in range(width)] if tolerance else [])
            for flip in flips:
                probe = keys ^ flip
                if width <= DIRECT_TABLE_BITS:
                    lo, count = begins[probe], sizes[probe]
                else:
                    lo = np.searchsorted(sorted_keys, probe, "left")
                    count = np.searchsorted(sorted_keys, probe, "right") - lo
                total = int(count.sum())
                if total == 0:
                    continue
                # Expand (i, every j whose block matches i's probe) without a Python loop.
                a = np.repeat(everyone, count)
                starts = np.repeat(lo, count)
                offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
                b = order[starts + offsets]
                keep = a < b
                a, b = a[keep], b[keep]
                close = np.bitwise_count(uniq[a] ^ uniq[b]) <= radius
                if close.any():
                    found.append(np.stack([a[close], b[close]], axis=1))
        if found:
            linked = np.unique(np.concatenate(found), axis=0)
            pairs.append(np.stack([first[linked[:, 0]], first[linked[:, 1]]], axis=1))
    return np.sort(np.concatenate(pairs).astype(np.int64), axis=1)


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

    def signatures(self, shingle_sets: list[set[int]], chunk: int = 200_000) -> np.ndarray:
        """MinHash signatures, one row per set, computed for many sets at once.

        All shingles are hashed in one array (``chunk`` shingles at a time to bound memory)
        and reduced per set with ``minimum.reduceat``, instead of one small numpy call per
        text, which was the slowest part of dedup's decision.
        """
        out = np.empty((len(shingle_sets), len(self.a)), dtype=np.uint64)
        start = 0
        while start < len(shingle_sets):
            stop, total = start, 0
            while stop < len(shingle_sets) and (total == 0 or total + len(shingle_sets[stop]) <= chunk):
                total += len(shingle_sets[stop])
                stop += 1
            sizes = np.fromiter((len(s) for s in shingle_sets[start:stop]), dtype=np.int64, count=stop - start)
            flat = np.fromiter((x for s in shingle_sets[start:stop] for x in s), dtype=np.uint64, count=total)
            hashed = (np.outer(self.a, flat % np.uint64(self.PRIME)) + self.b[:, None]) % np.uint64(self.PRIME)
            out[start:stop] = np.minimum.reduceat(hashed, np.cumsum(sizes) - sizes, axis=1).T
            start = stop
        return out

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
            minhashes = self.minhasher.signatures(shingles)
            buckets: dict[bytes, list[int]] = {}
            for pos, sh in enumerate(shingles):
                for band in self.minhasher.band_keys(minhashes[pos]):
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
