"""Near-duplicate search over perceptual hashes: 10k, 40k, 160k. Target: close to linear."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from recaption.dedup.hashes import near_hash_pairs
from recaption.stages.dedup import Dedup


def hashes_with_near_copies(n: int, seed: int = 0) -> np.ndarray:
    """90% random hashes, 10% near copies (1-4 bits flipped) of earlier ones."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, n, dtype=np.uint64) ^ (rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63))
    copies = rng.choice(n, n // 10, replace=False)
    for k in copies:
        src = int(rng.integers(0, n))
        h = int(base[src])
        for bit in rng.choice(64, int(rng.integers(1, 5)), replace=False):
            h ^= 1 << int(bit)
        base[k] = h
    return base


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,40000,160000,640000")
    ap.add_argument("--radius", type=int, default=4)
    args = ap.parse_args()
    results = {}
    for n in (int(s) for s in args.sizes.split(",")):
        hashes = hashes_with_near_copies(n)
        start = time.perf_counter()
        pairs = near_hash_pairs(hashes, args.radius)
        search = time.perf_counter() - start
        sigs = ((f"0:{i}", {"id": str(i), "sha": "", "phash": f"{int(h):016x}", "pixels": 1, "text": 0}) for i, h in enumerate(hashes))
        start = time.perf_counter()
        decisions = Dedup(exact_text=False, near_text=False).decide(sigs)
        decide = time.perf_counter() - start
        results[n] = {"search_s": round(search, 3), "us_per_hash": round(search / n * 1e6, 2), "dedup_decide_s": round(decide, 3), "pairs_found": int(len(pairs)), "rejected": len(decisions)}
    sizes = sorted(results)
    for a, b in zip(sizes, sizes[1:]):
        results[b]["time_ratio_vs_previous"] = round(results[b]["search_s"] / max(results[a]["search_s"], 1e-9), 2)
        results[b]["size_ratio_vs_previous"] = b / a
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
