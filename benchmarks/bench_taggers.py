"""Each offline tagger's images/s on one core, and its share of the `rules` recipe's time.

Same real-size JPEGs as the throughput benchmark (the first ``--n`` of them): OCR is by far
the slowest tagger, so the default is a few hundred images rather than 2,000.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

from benchmarks.harness import OUT, real_size_jpegs, run_cli
from recaption.record import Pair
from recaption.stages import STAGES


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    full = real_size_jpegs(OUT / "jpegs-2000", 2000)
    manifest = full.parent / f"pairs-{args.n}.jsonl"
    lines = open(full).read().splitlines()[: args.n]
    manifest.write_text("\n".join(lines) + "\n")
    paths = [str(full.parent / json.loads(line)["image_path"]) for line in lines]
    results: dict = {"images": args.n, "taggers": {}}
    for name in ("classify", "nsfw", "ocr"):
        stage = STAGES[name]()
        stage([Pair("warm-up", paths[0])])  # model loading is not throughput
        pairs = [Pair(str(i), p) for i, p in enumerate(paths)]
        start = time.perf_counter()
        for i in range(0, len(pairs), stage.batch_size):
            stage(pairs[i : i + stage.batch_size])
        seconds = time.perf_counter() - start
        results["taggers"][name] = {"images_per_s": round(len(pairs) / seconds, 1), "seconds": round(seconds, 2)}
    for recipe in ("clean", "default"):
        out = OUT / f"taggers-{recipe}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, _ = run_cli("run", str(manifest), str(out), "--recipe", recipe, "--workers", "1", "--no-progress")
        stages = json.loads((out / "stats.json").read_text())["stages"]
        total = sum(s["seconds"] for s in stages.values())
        results[f"recipe_{recipe}"] = {
            "wall_s": round(seconds, 1),
            "pairs_per_s": round(args.n / seconds, 1),
            "share_of_stage_time": {k: round(v["seconds"] / total, 3) for k, v in stages.items() if v["seconds"] > 0},
        }
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
