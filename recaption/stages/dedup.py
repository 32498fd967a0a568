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
only hashes that collide on a block are compared. Each record searches with its hash, its
left-right mirror's (a flipped copy) and, with ``near_crops: true``, its crop windows' (a copy
cropped a little or given a border): two records are near copies when one's hash or mirror
hash is within the radius of any of the other's hashes (a window only within
``WINDOW_RADIUS``, and never against another window). Windows are off by default: on planted
copies they find 97-100 % of crops and borders, but also join a few distinct tiles of dark or
synthetic photos (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
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


WINDOWS = 9  # the image check's window hashes per record (stages.image.CROP_WINDOWS)
WINDOW_RADIUS = 2  # measured on planted copies (benchmarks/bench_near_copies.py): 3 found no more, 1 fewer
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
    """MinHash signatures of character shingles, and LSH band hashes for candidates."""

    PRIME = (1 << 31) - 1

    def __init__(self, num_perm: int = 64, bands: int = 16, shingle: int = 5, seed: int = 1) -> None:
        if num_perm % bands:
            raise StageError("dedup: text_num_perm must be a multiple of text_bands")
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


def _text_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class _Columns:
    """Signatures as numpy columns, filled in chunks, so that deciding over millions of
    records costs tens of bytes per record instead of a Python dict each."""

    CHUNK = 65_536

    def __init__(self, num_perm: int) -> None:
        self.keys: list[str] = []
        self.ids: list[str] = []
        self.num_perm = num_perm  # 0: no MinHash column (near-text dedup is off)
        self._chunks: list[dict[str, np.ndarray]] = []
        self._fill = self.CHUNK

    def _new_chunk(self) -> None:
        c = self.CHUNK
        self._chunks.append({
            "sha": np.zeros(c, np.uint64), "phash": np.zeros(c, np.uint64), "has_phash": np.zeros(c, bool),
            "mirror": np.zeros(c, np.uint64), "has_mirror": np.zeros(c, bool),
            "windows": np.zeros((c, WINDOWS), np.uint64), "n_windows": np.zeros(c, np.int8),
            "pixels": np.zeros(c, np.int64), "text": np.zeros(c, np.uint64), "minhash": np.zeros((c, self.num_perm), np.uint32),
        })
        self._fill = 0

    def add(self, key: str, sig: dict[str, Any]) -> None:
        if self._fill == self.CHUNK:
            self._new_chunk()
        row, chunk = self._fill, self._chunks[-1]
        self.keys.append(key)
        self.ids.append(sig["id"])
        chunk["sha"][row] = int(sig["sha"] or "0", 16)
        if sig.get("phash"):
            chunk["phash"][row] = int(sig["phash"], 16)
            chunk["has_phash"][row] = True
        if sig.get("phash_mirror"):
            chunk["mirror"][row] = int(sig["phash_mirror"], 16)
            chunk["has_mirror"][row] = True
        windows = sig.get("phash_windows") or []
        if isinstance(windows, list):
            found = [int(w, 16) for w in windows[:WINDOWS] if isinstance(w, str)]
            chunk["windows"][row, : len(found)] = found
            chunk["n_windows"][row] = len(found)
        chunk["pixels"][row] = sig.get("pixels", 0)
        chunk["text"][row] = sig.get("text", 0)
        if self.num_perm and sig.get("minhash"):
            chunk["minhash"][row] = np.frombuffer(bytes.fromhex(sig["minhash"]), dtype=np.uint32)
        self._fill += 1

    def column(self, name: str) -> np.ndarray:
        """The whole column; its chunks are released, so ask for each column once."""
        if not self._chunks:  # no record at all: an empty column of the right shape
            width = {"minhash": self.num_perm, "windows": WINDOWS}.get(name)
            return np.zeros((0, width) if width is not None else 0, np.uint64)
        parts = [c.pop(name) for c in self._chunks]
        parts[-1] = parts[-1][: self._fill]
        return np.concatenate(parts)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label (the smallest member index) for each of ``n`` items."""
    uf = _UnionFind(n)
    for a, b in pairs:
        uf.union(int(a), int(b))
    return np.fromiter((uf.find(i) for i in range(n)), dtype=np.int64, count=n)


def _runs_of_equal(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Pairs linking ``members`` that share a value: each to the first and the previous of its run."""
    if len(members) < 2:
        return np.empty((0, 2), np.int64)
    order = members[np.argsort(values[members], kind="stable")]
    v = values[order]
    same = v[1:] == v[:-1]
    run_start = np.maximum.accumulate(np.where(np.r_[True, ~same], np.arange(len(order)), 0))
    to_prev = np.stack([order[:-1][same], order[1:][same]], axis=1)
    to_first = np.stack([order[run_start[1:][same]], order[1:][same]], axis=1)
    return np.concatenate([to_prev, to_first])


@register
class Dedup(GlobalStage):
    """Reject repeated ids and duplicate images; flag (or reject) captions shared by images."""

    name = "dedup"
    provides = ("score:text_dup_count",)
    requires = (("score:sha256",),)  # the image check's hashes: image duplicates are found from them

    def facts_needed(self) -> list[set[str]]:
        return super().facts_needed() if self.exact_image or self.near_image else []
    AGREEMENT_CHUNK = 65_536

    def __init__(
        self,
        *,
        ids: bool = True,
        exact_image: bool = True,
        near_image: bool = True,
        phash_radius: int = 4,
        near_crops: bool = False,
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
        if not 0 < text_jaccard <= 1:
            raise StageError("dedup.text_jaccard must be in (0, 1]")
        self.ids, self.exact_image, self.near_image = ids, exact_image, near_image
        self.phash_radius, self.near_crops = phash_radius, near_crops
        self.window_radius = min(phash_radius, WINDOW_RADIUS)
        self.exact_text, self.near_text = exact_text, near_text
        self.text_jaccard, self.text_action = text_jaccard, text_action
        self.minhasher = MinHasher(text_num_perm, text_bands)

    def signature(self, pair: Pair) -> dict[str, Any]:
        """Computed in the workers: hashes only, so the decision needs no text and no image."""
        selected = [c.text for c in pair.captions if c.selected] or pair.texts[:1]
        text = normalise_text(" ".join(selected))
        sig: dict[str, Any] = {
            "id": pair.image_id,
            "sha": (pair.scores.get("sha256") or "")[:16],  # 64 bits: collisions are not a concern here
            "phash": pair.scores.get("phash"),
            "phash_mirror": pair.scores.get("phash_mirror"),
            "phash_windows": pair.scores.get("phash_windows") if self.near_crops else None,
            "pixels": int(pair.scores.get("width", 0)) * int(pair.scores.get("height", 0)),
            "text": _text_hash(text) if text else 0,
        }
        if text and self.near_text:
            sig["minhash"] = self.minhasher.signature(text).tobytes().hex()
        return sig

    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Decision]:
        cols = _Columns(self.minhasher.num_perm if self.near_text else 0)
        for key, sig in signatures:
            cols.add(key, sig)
        n = len(cols.keys)
        ids, keys = cols.ids, cols.keys
        pixels = cols.column("pixels")
        alive = np.ones(n, dtype=bool)
        decisions: dict[str, Decision] = {}

        def reject(i: int, reason: str, detail: str) -> None:
            decisions[keys[i]] = Decision(reject=(reason, detail))
            alive[i] = False

        if self.ids:
            first_of: dict[str, int] = {}
            for i, image_id in enumerate(ids):
                owner = first_of.setdefault(image_id, i)
                if owner != i:
                    reject(i, "duplicate_id", f"image_id {image_id!r} already used by the record at {keys[owner]}")

        def reject_groups(members: np.ndarray, labels: np.ndarray, reason: str) -> None:
            # Sort each group by most pixels, then input order: the first one is kept.
            order = np.lexsort((members, -pixels[members], labels))
            keeper = None
            for pos in range(len(order)):
                idx, label = int(members[order[pos]]), labels[order[pos]]
                if pos == 0 or label != labels[order[pos - 1]]:
                    keeper = idx
                else:
                    reject(idx, reason, f"duplicate of {ids[keeper]!r}")

        if self.exact_image:
            sha = cols.column("sha")
            members = np.flatnonzero(alive & (sha != 0))
            reject_groups(members, sha[members], "exact_image")
        if self.near_image:
            members = np.flatnonzero(alive & cols.column("has_phash"))
            phash, mirror, has_mirror = cols.column("phash")[members], cols.column("mirror")[members], cols.column("has_mirror")[members]
            # Each record stands in the search with its hash and its mirror's: a left-right
            # flipped copy's hash is near the original's mirror hash (and the other way round).
            # With their windows' hashes too: a copy cropped a little, or given a border, is near
            # one of the original's windows (or the original near one of the copy's).
            windows, n_windows = cols.column("windows")[members], cols.column("n_windows")[members]
            in_window = np.arange(WINDOWS)[None, :] < n_windows[:, None]
            local = np.arange(len(members))
            owners = np.concatenate([local, local[has_mirror], np.broadcast_to(local[:, None], windows.shape)[in_window]])
            pool = np.concatenate([phash, mirror[has_mirror], windows[in_window]])
            found = near_hash_pairs(pool, self.phash_radius)
            # A window stands for a copy against a whole image (or its mirror), never against
            # another window: two textures (brick, grass) share windows without being copies.
            whole = len(local) + int(has_mirror.sum())
            found = found[(found[:, 0] < whole) | (found[:, 1] < whole)]
            # and, being a guess at a crop, it must come closer than a whole image does
            by_window = (found[:, 0] >= whole) | (found[:, 1] >= whole)
            close = np.bitwise_count(pool[found[:, 0]] ^ pool[found[:, 1]]) <= self.window_radius
            found = found[~by_window | close]
            links = owners[found]
            links = links[links[:, 0] != links[:, 1]]
            reject_groups(members, _components(len(members), links), "near_image")
        if self.exact_text or self.near_text:
            self._text_groups(cols, alive, decisions)
        return decisions

    def _text_groups(self, cols: _Columns, alive: np.ndarray, decisions: dict[str, Decision]) -> None:
        text = cols.column("text")
        members = np.flatnonzero(alive & (text != 0))
        local = np.arange(len(members))
        links = [np.empty((0, 2), np.int64)]
        if self.exact_text:
            links.append(_runs_of_equal(text[members], local))
        if self.near_text:
            minhash = cols.column("minhash")[members]
            candidates = np.concatenate(
                [_runs_of_equal(self.minhasher.band_hash(minhash, b), local) for b in range(self.minhasher.bands)]
            )
            if len(candidates):
                candidates = np.unique(np.sort(candidates, axis=1), axis=0)
                # Estimated Jaccard: the share of MinHash values two texts agree on. In chunks:
                # a million candidate pairs would otherwise gather 2 x 256 MB of rows at once.
                for start in range(0, len(candidates), self.AGREEMENT_CHUNK):
                    chunk = candidates[start : start + self.AGREEMENT_CHUNK]
                    agree = (minhash[chunk[:, 0]] == minhash[chunk[:, 1]]).mean(axis=1)
                    links.append(chunk[agree >= self.text_jaccard])
        labels = _components(len(members), np.concatenate(links))
        shared = np.flatnonzero(np.bincount(labels, minlength=len(members))[labels] > 1)
        groups: dict[int, list[int]] = {}  # only captions that are shared: most are not
        for pos in shared:
            groups.setdefault(int(labels[pos]), []).append(int(members[pos]))
        for group in groups.values():
            if len(group) < 2:
                continue
            first = group[0]  # members are in input order
            for i in group:
                d = Decision(scores={"text_dup_count": len(group)})
                if i != first:
                    d.meta["text_dup_of"] = cols.ids[first]
                    if self.text_action == "reject":
                        d.reject = ("duplicate_text", f"same caption as {cols.ids[first]!r}")
                decisions[cols.keys[i]] = d
