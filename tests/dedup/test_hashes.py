import numpy as np
import pytest

from recaption.dedup.hashes import HotBuckets, near_hash_pairs, nearest_in


def planted(rng, n, copies, max_flips=6):
    base = rng.integers(0, 2**63, n, dtype=np.uint64)
    out = []
    for k in range(copies):
        h = int(base[k % n])
        for bit in rng.choice(64, size=int(rng.integers(0, max_flips + 1)), replace=False):
            h ^= 1 << int(bit)
        out.append(h)
    return base, np.array(out, dtype=np.uint64)


@pytest.mark.parametrize("radius", [0, 3, 4, 8])
def test_nearest_in_equals_brute_force(radius):
    rng = np.random.default_rng(radius)
    base, copies = planted(rng, 200, 150)
    query = np.concatenate([copies, rng.integers(0, 2**63, 50, dtype=np.uint64), base[:3]])
    row, distance = nearest_in(query, np.concatenate([base, base[:10]]), radius)
    full = np.concatenate([base, base[:10]])
    for q, r, d in zip(query, row, distance):
        dists = np.bitwise_count(full ^ q).astype(int)
        if dists.min() > radius:
            assert r == -1 and d == -1
        else:
            # the nearest, ties to the earliest
            assert d == dists.min() and r == int(np.flatnonzero(dists == dists.min())[0])


def test_nearest_in_empty_sides():
    row, d = nearest_in(np.zeros(0, np.uint64), np.ones(3, np.uint64), 4)
    assert len(row) == 0
    row, d = nearest_in(np.ones(3, np.uint64), np.zeros(0, np.uint64), 4)
    assert (row == -1).all() and (d == -1).all()


def hot_hashes(n, rng):
    """``n`` distinct hashes whose low 40 bits are all zero (as near-uniform images give): every
    block over those bits is one huge bucket."""
    high = rng.choice(2**24, n, replace=False).astype(np.uint64)
    return high << np.uint64(40)


def test_a_hot_bucket_is_capped_and_said():
    rng = np.random.default_rng(0)
    hashes = hot_hashes(20_000, rng)
    hot = HotBuckets()
    pairs = near_hash_pairs(hashes, 4, hot_bucket=64, hot=hot)
    assert hot.buckets >= 1 and hot.largest == 20_000 and hot.searches > 0
    assert hot.as_stats("near_image")["near_image_hot_buckets"] == hot.buckets
    # what it did find is right; each search compared with at most 64 per block and flip
    assert all(np.bitwise_count(hashes[a] ^ hashes[b]) <= 4 for a, b in pairs)
    assert len(pairs) > 0


def test_below_the_cap_nothing_is_capped():
    rng = np.random.default_rng(1)
    hashes = hot_hashes(300, rng)
    hot = HotBuckets()
    capped = near_hash_pairs(hashes, 4, hot_bucket=1000, hot=hot)
    assert hot.buckets == 0 and hot.as_stats("x") == {}
    brute = {(i, j) for i in range(300) for j in range(i + 1, 300) if np.bitwise_count(hashes[i] ^ hashes[j]) <= 4}
    assert {tuple(map(int, p)) for p in capped} == brute


def test_one_phash_for_a_hundred_thousand_records_is_linear():
    hashes = np.zeros(100_000, np.uint64)  # a hundred thousand blank images
    pairs = near_hash_pairs(hashes, 4)
    assert len(pairs) == 99_999 and (pairs[:, 0] == 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_of_edges_match_union_find(seed):
    from recaption.dedup.groups import UnionFind, components_of_edges

    rng = np.random.default_rng(seed)
    n = 2000
    a, b = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    chain = np.arange(1000, 1999)  # a long chain, in shuffled order: many rounds of hooking
    order = rng.permutation(len(chain))
    a, b = np.r_[a, chain[order]], np.r_[b, chain[order] + 1]
    labels = components_of_edges(n, a, b)
    uf = UnionFind(n)
    for x, y in zip(a, b):
        uf.union(int(x), int(y))
    assert labels.tolist() == [uf.find(i) for i in range(n)]  # both: the smallest vertex of the component
