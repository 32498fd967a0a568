"""Near copies whatever the edit: distinct photo tiles (scikit-image's photos in a grid) and one
copy of each tile per kind of edit (exact, re-encode, resize, brightness, flip, watermark, crop
off a side, a corner, every side, a border). Reports, per kind, the share of copies found,
and how many distinct tiles were dropped for another tile, with the window and mirror hashes
off (the whole-image hash alone, as before) and on."""

from __future__ import annotations

import argparse
import json
import time

from recaption.stages.dedup import Dedup
from recaption.stages.image import ImageCheck
from tests.stages.test_dedup import copies_found, planted_copies

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "immunohistochemistry", "retina", "hubble_deep_field",
          "colorwheel", "brick", "grass", "gravel", "moon", "coins")


def measure(pairs, kinds, windows: bool, mirror: bool) -> dict:
    stage = Dedup(near_text=False, exact_text=False, near_crops=windows)
    sigs = []
    for i, p in enumerate(pairs):
        sig = stage.signature(p)
        if not mirror:
            sig["phash_mirror"] = None
        sigs.append((f"0:{i}", sig))
    start = time.perf_counter()
    decisions = stage.decide(sigs)
    seconds = time.perf_counter() - start
    found, wrong = copies_found(decisions, pairs, kinds)
    total = sum(found[k] * sum(1 for v in kinds.values() if v == k) for k in found) / len(kinds)
    return {"found_pct": {k: round(100 * v, 1) for k, v in found.items()}, "all_kinds_pct": round(100 * total, 1),
            "distinct_tiles_dropped": len(wrong), "decide_seconds": round(seconds, 3)}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default="4,4", help="tiles per photo, columns,rows")
    args = ap.parse_args()
    grid = tuple(int(x) for x in args.grid.split(","))
    n_tiles = len(PHOTOS) * grid[0] * grid[1]
    pairs, kinds = planted_copies(PHOTOS, grid, copies=n_tiles * 10)  # every tile gets every kind of edit
    start = time.perf_counter()
    ImageCheck(min_side=32)(pairs)
    check_ms = 1000 * (time.perf_counter() - start) / len(pairs)
    results = {
        "tiles": n_tiles, "copies": len(kinds), "image_check_ms_per_image": round(check_ms, 2),
        "whole_image_hash_only": measure(pairs, kinds, windows=False, mirror=False),
        "with_mirror (the default)": measure(pairs, kinds, windows=False, mirror=True),
        "with_mirror_and_windows (near_crops: true)": measure(pairs, kinds, windows=True, mirror=True),
    }
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
