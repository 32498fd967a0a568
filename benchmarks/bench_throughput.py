"""The `clean` recipe (the foundation issue's pipeline, no models) vs a plain PIL decode-and-convert loop.

The decode loop is the floor for this work (every image must be decoded in full to find
truncation). Targets: recipe rate per core >= 0.7 of the loop's; 2 workers >= 1.7x 1 worker.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from PIL import Image

from benchmarks.harness import OUT, real_size_jpegs, run_cli


def pil_loop(manifest: Path) -> float:
    folder = manifest.parent
    paths = [folder / json.loads(line)["image_path"] for line in open(manifest)]
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            img.load()
            img.convert("RGB")
    return len(paths) / (time.perf_counter() - start)


def _decode_all(paths: list[Path]) -> int:
    for path in paths:
        with Image.open(path) as img:
            img.load()
            img.convert("RGB")
    return len(paths)


def pil_two_process_ceiling(manifest: Path, n: int = 600) -> float:
    """What two processes gain over one on this machine for the same decode loop."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    folder = manifest.parent
    paths = [folder / json.loads(line)["image_path"] for line in open(manifest)][:n]
    start = time.perf_counter()
    _decode_all(paths)
    one = time.perf_counter() - start
    with ProcessPoolExecutor(2, mp.get_context("spawn")) as pool:
        list(pool.map(_decode_all, [paths[:4], paths[4:8]]))  # start both workers first
        start = time.perf_counter()
        list(pool.map(_decode_all, [paths[: n // 2], paths[n // 2 :]]))
        two = time.perf_counter() - start
    return one / two


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    manifest = real_size_jpegs(OUT / f"jpegs-{args.n}", args.n)
    results: dict = {"pairs": args.n, "repeats": args.repeats}
    # The machine is shared: interleave the configurations and keep the median of each.
    rates: dict[str, list[float]] = {"pil": [], "w1": [], "w2": []}
    ceilings: list[float] = []
    for _ in range(args.repeats):
        rates["pil"].append(pil_loop(manifest))
        ceilings.append(pil_two_process_ceiling(manifest))
        for workers in (1, 2):
            out = OUT / f"run-w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, _ = run_cli("run", str(manifest), str(out), "--recipe", "clean", "--workers", str(workers), "--no-progress", "--shard-size", "250")
            rates[f"w{workers}"].append(args.n / seconds)
            stages = json.loads((out / "stats.json").read_text())["stages"]
            results[f"recipe_w{workers}_stage_seconds"] = {k: round(v["seconds"], 2) for k, v in stages.items()}
    for key, values in rates.items():
        results[f"{key}_per_s_runs"] = [round(v, 1) for v in values]
        results[f"{key}_per_s_median"] = round(statistics.median(values), 1)
    results["hardware_two_process_speedup_runs"] = [round(c, 2) for c in ceilings]
    results["hardware_two_process_speedup"] = round(statistics.median(ceilings), 2)
    results["ratio_vs_pil_per_core"] = round(results["w1_per_s_median"] / results["pil_per_s_median"], 2)
    results["speedup_2_workers"] = round(results["w2_per_s_median"] / results["w1_per_s_median"], 2)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
