"""Peak memory of the `clean` recipe from 2k to 50k pairs: flat if the run streams."""

from __future__ import annotations

import argparse
import json
import shutil

from benchmarks.harness import OUT, run_cli, small_jpegs


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,10000,50000")
    args = ap.parse_args()
    results = {}
    biggest = max(int(s) for s in args.sizes.split(","))
    full = small_jpegs(OUT / f"small-{biggest}", biggest)
    lines = open(full).read().splitlines()
    for size in (int(s) for s in args.sizes.split(",")):
        manifest = full.parent / f"pairs-{size}.jsonl"
        manifest.write_text("\n".join(lines[:size]) + "\n")
        out = OUT / f"mem-{size}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, rss_mib = run_cli("run", str(manifest), str(out), "--recipe", "clean", "--workers", "1", "--no-progress")
        results[size] = {"peak_rss_mib": rss_mib, "seconds": round(seconds, 1), "pairs_per_s": round(size / seconds)}
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
