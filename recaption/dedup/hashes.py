"""Near 64-bit perceptual hashes, found without comparing all pairs.

A hash within Hamming radius r of another shares at least one of r+1 disjoint bit blocks with
it exactly (pigeonhole), so only hashes that collide on a block are compared. For large inputs
fewer, longer blocks matched within one bit are cheaper (``block_plan``). Every candidate is
verified by its true distance.

**Hot buckets.** A block value shared by a huge number of distinct hashes (near-black or
near-white images, a stock watermark) would make its bucket quadratic. Exact copies are
collapsed first (a million copies of one blank image are one hash), and a search that meets a
bucket larger than ``hot_bucket`` compares with only the ``hot_bucket`` hashes nearest to it in
the bucket's order (sorted by the bits after the block); ``HotBuckets`` says what was capped.
Candidates are expanded in chunks, so memory stays bounded whatever the skew.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIRECT_TABLE_BITS = 22  # blocks up to this wide are looked up in a table (4M entries), not searched
HOT_BUCKET = 512  # a search compares with at most this many hashes of one bucket
EXPAND_CHUNK = 1 << 22  # candidate pairs expanded and verified at once (~100 MB of temporaries)


@dataclass
class HotBuckets:
    """What the hot-bucket cap cut: buckets over the cap, the largest, and the searches capped."""

    buckets: int = 0
    largest: int = 0
    searches: int = 0

    def as_stats(self, prefix: str) -> dict[str, int]:
        if not self.buckets:
            return {}
        return {f"{prefix}_hot_buckets": self.buckets, f"{prefix}_hot_bucket_largest": self.largest,
                f"{prefix}_hot_searches_capped": self.searches}


def blocks(n_blocks: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of ``n_blocks`` disjoint bit blocks covering all bits."""
    edges = np.linspace(0, bits, n_blocks + 1).round().astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]


def block_plan(n: int, radius: int) -> tuple[int, int]:
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


def _block_on_top(h: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Rotate so that bits [shift, shift + width) become the top ``width`` bits: sorting the
    result groups hashes by block value, and orders each bucket by the remaining bits."""
    s = (shift + width) % 64
    if s == 0:
        return h.copy()
    return (h >> np.uint64(s)) | (h << np.uint64(64 - s))


def block_join(left: np.ndarray, right: np.ndarray, radius: int, self_join: bool, hot_bucket: int, hot: HotBuckets) -> np.ndarray:
    """Pairs (i, j): ``left[i]`` and ``right[j]`` within ``radius`` bits (i < j when ``self_join``,
    ``left`` then being ``right``). Both hold distinct hashes."""
    n_blocks, tolerance = block_plan(max(len(left), len(right)), radius)
    found: list[np.ndarray] = []
    hot_keys: set[tuple[int, int]] = set()
    for block, (shift, width) in enumerate(blocks(n_blocks)):
        top = np.uint64(64 - width)
        rot_right = _block_on_top(right, shift, width)
        order = np.argsort(rot_right, kind="stable")
        ordered = rot_right[order]
        right_keys = (ordered >> top).astype(np.int64)
        if width <= DIRECT_TABLE_BITS:
            # A direct-address table: bucket start and size for every block value.
            sizes = np.bincount(right_keys, minlength=1 << width)
            begins = np.cumsum(sizes) - sizes
        rot_left = rot_right if self_join else _block_on_top(left, shift, width)
        left_keys = (rot_left >> top).astype(np.int64)
        for flip in [0] + ([1 << b for b in range(width)] if tolerance else []):
            probe = left_keys ^ flip
            if width <= DIRECT_TABLE_BITS:
                lo, count = begins[probe].copy(), sizes[probe].copy()
            else:
                lo = np.searchsorted(right_keys, probe, "left")
                count = np.searchsorted(right_keys, probe, "right") - lo
            capped = count > hot_bucket
            if capped.any():
                # Compare with the hot_bucket hashes nearest in the bucket's order only.
                where = np.searchsorted(ordered, rot_left[capped] ^ (np.uint64(flip) << top))
                start = np.clip(where - hot_bucket // 2, lo[capped], lo[capped] + count[capped] - hot_bucket)
                hot.largest = max(hot.largest, int(count[capped].max()))
                hot.searches += int(capped.sum())
                hot_keys.update((block, int(k)) for k in np.unique(probe[capped]))
                lo[capped], count[capped] = start, hot_bucket
            found.extend(_verified(left, right, lo, count, order, radius, self_join, capped))
    hot.buckets += len(hot_keys)
    if not found:
        return np.empty((0, 2), np.int64)
    return np.unique(np.concatenate(found), axis=0)


def _verified(left: np.ndarray, right: np.ndarray, lo: np.ndarray, count: np.ndarray, order: np.ndarray,
              radius: int, self_join: bool, capped: np.ndarray) -> list[np.ndarray]:
    """Expand (probe i, every j of its bucket range) in chunks, keep the pairs within ``radius``."""
    out: list[np.ndarray] = []
    ends = np.cumsum(count)
    i = 0
    while i < len(count):
        base = ends[i] - count[i]
        j = max(i + 1, int(np.searchsorted(ends, base + EXPAND_CHUNK, "right")))
        c = count[i:j]
        total = int(c.sum())
        i_next, ids = j, np.arange(i, j)
        if total:
            a = np.repeat(ids, c)
            starts = np.repeat(lo[i:j], c)
            offsets = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            b = order[starts + offsets]
            if self_join:
                # A capped search's window is not symmetric: keep both orders, sorted below.
                keep = (a < b) | (np.repeat(capped[i:j], c) & (a != b))
                a, b = a[keep], b[keep]
            close = np.bitwise_count(left[a] ^ right[b]) <= radius
            if close.any():
                pairs = np.stack([a[close], b[close]], axis=1)
                out.append(np.sort(pairs, axis=1) if self_join else pairs)
        i = i_next
    return out


def near_hash_pairs(hashes: np.ndarray, radius: int, hot_bucket: int = HOT_BUCKET, hot: HotBuckets | None = None) -> np.ndarray:
    """Index pairs (i < j) linking every group of 64-bit hashes within ``radius`` bits.

    Exactly equal hashes are linked through their first occurrence, so a thousand copies
    of one blank image cost a thousand pairs, not half a million.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        return np.empty((0, 2), dtype=np.int64)
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    exact = np.stack([first[inverse], np.arange(len(hashes))], axis=1)
    pairs = [exact[exact[:, 0] != exact[:, 1]]]
    if radius > 0 and len(uniq) > 1:
        linked = block_join(uniq, uniq, radius, True, hot_bucket, hot or HotBuckets())
        if len(linked):
            pairs.append(np.stack([first[linked[:, 0]], first[linked[:, 1]]], axis=1))
    return np.sort(np.concatenate(pairs).astype(np.int64), axis=1)


def nearest_in(query: np.ndarray, base: np.ndarray, radius: int, hot_bucket: int = HOT_BUCKET,
               hot: HotBuckets | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the index of the nearest ``base`` hash within ``radius`` bits
    (ties to the earliest), or -1; and that distance (-1 where none)."""
    query, base = np.asarray(query, dtype=np.uint64), np.asarray(base, dtype=np.uint64)
    match = np.full(len(query), -1, np.int64)
    distance = np.full(len(query), -1, np.int64)
    if not len(query) or not len(base):
        return match, distance
    uq, q_inverse = np.unique(query, return_inverse=True)
    ub, b_first = np.unique(base, return_index=True)
    links = block_join(uq, ub, radius, False, hot_bucket, hot or HotBuckets())
    best = np.full(len(uq), -1, np.int64)
    best_distance = np.full(len(uq), -1, np.int64)
    if len(links):
        d = np.bitwise_count(uq[links[:, 0]] ^ ub[links[:, 1]]).astype(np.int64)
        # per query: the smallest distance, then the earliest base record
        order = np.lexsort((b_first[links[:, 1]], d, links[:, 0]))
        links, d = links[order], d[order]
        first = np.r_[True, links[1:, 0] != links[:-1, 0]]
        best[links[first, 0]] = b_first[links[first, 1]]
        best_distance[links[first, 0]] = d[first]
    return best[q_inverse], best_distance[q_inverse]
