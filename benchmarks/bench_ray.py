"""The Ray Data runner vs the local runner on the same pairs and the same cores.

Two ways, each interleaved so that the shared machine's noise falls on both runners, the
median of each kept, the outputs compared file by file:

- cold: each run through the CLI as a user starts it (`--workers 2`), so the Ray run pays
  for starting Ray and for its workers importing recaption and building the stages;
- warm: both runners in this process, Ray started once and warmed by one run that is not
  counted, which is what a long job on a cluster sees after its first minute.

    python -m benchmarks.bench_ray --n 5000 --repeats 2 [--default-n 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import OUT, real_size_jpegs, run_cli


def ray_start_seconds(workers: int) -> float:
    """Starting and stopping a local Ray in a fresh process, with nothing to run."""
    code = f"import ray; ray.init(num_cpus={workers}, include_dashboard=False); ray.shutdown()"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def same_output(a: Path, b: Path) -> bool:
    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    return files(a / "data") == files(b / "data") and files(a / "rejects") == files(b / "rejects")


def compare(manifest: Path, recipe: str, repeats: int, workers: int, shard_size: int, tag: str) -> dict:
    seconds: dict[str, list[float]] = {"local": [], "ray": []}
    stages: dict[str, dict] = {}
    for _ in range(repeats):
        for runner in ("local", "ray"):
            out = OUT / f"ray-bench-{tag}-{runner}"
            shutil.rmtree(out, ignore_errors=True)
            wall, _ = run_cli("run", str(manifest), str(out), "--recipe", recipe, "--workers", str(workers), "--runner", runner,
                              "--shard-size", str(shard_size), "--no-progress")
            seconds[runner].append(wall)
            stats = json.loads((out / "stats.json").read_text())
            stages[runner] = {k: round(v["seconds"], 1) for k, v in stats["stages"].items()}
    n = sum(1 for _ in open(manifest))
    local, on_ray = statistics.median(seconds["local"]), statistics.median(seconds["ray"])
    return {
        "recipe": recipe,
        "pairs": n,
        "shard_size": shard_size,
        "local_seconds_runs": [round(s, 1) for s in seconds["local"]],
        "ray_seconds_runs": [round(s, 1) for s in seconds["ray"]],
        "local_pairs_per_s": round(n / local, 1),
        "ray_pairs_per_s": round(n / on_ray, 1),
        "ray_over_local_wall": round(on_ray / local, 2),
        "stage_seconds": stages,
        "same_records": same_output(OUT / f"ray-bench-{tag}-local", OUT / f"ray-bench-{tag}-ray"),
    }


def compare_warm(manifest: Path, recipe: str, repeats: int, workers: int, shard_size: int) -> dict:
    import ray

    from recaption.io.base import ReaderOptions
    from recaption.recipe import load_recipe
    from recaption.runners.driver import RunDriver
    from recaption.runners.local import LocalExecutor
    from recaption.runners.ray_data import RayExecutor
    from recaption.runners.shards import RunConfig

    def run(executor: type, out: Path) -> float:
        shutil.rmtree(out, ignore_errors=True)
        config = RunConfig(str(manifest), str(out), load_recipe(recipe), reader=ReaderOptions(shard_size=shard_size), workers=workers)
        start = time.perf_counter()
        RunDriver(config, executor(workers) if executor is LocalExecutor else executor(), show_progress=False).run()
        return time.perf_counter() - start

    ray.init(num_cpus=workers, include_dashboard=False)
    try:
        warm_up = run(RayExecutor, OUT / "ray-bench-warm-ray")
        seconds: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(repeats):
            seconds["local"].append(run(LocalExecutor, OUT / "ray-bench-warm-local"))
            seconds["ray"].append(run(RayExecutor, OUT / "ray-bench-warm-ray"))
    finally:
        ray.shutdown()
    local, on_ray = statistics.median(seconds["local"]), statistics.median(seconds["ray"])
    n = sum(1 for _ in open(manifest))
    return {
        "recipe": recipe,
        "pairs": n,
        "ray_first_run_seconds": round(warm_up, 1),
        "local_seconds_runs": [round(s, 1) for s in seconds["local"]],
        "ray_seconds_runs": [round(s, 1) for s in seconds["ray"]],
        "local_pairs_per_s": round(n / local, 1),
        "ray_pairs_per_s": round(n / on_ray, 1),
        "ray_over_local_wall": round(on_ray / local, 2),
        "same_records": same_output(OUT / "ray-bench-warm-local", OUT / "ray-bench-warm-ray"),
    }


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--default-n", type=int, default=200, help="pairs for the default recipe (models in actor pools); 0 skips it")
    args = ap.parse_args()
    manifest = real_size_jpegs(OUT / f"jpegs-{args.n}", args.n)
    results = {"ray_start_seconds": round(statistics.median(ray_start_seconds(args.workers) for _ in range(3)), 1)}
    results["clean_cold"] = compare(manifest, "clean", args.repeats, args.workers, 250, "clean")
    results["clean_warm"] = compare_warm(manifest, "clean", args.repeats, args.workers, 250)
    if args.default_n:
        small = real_size_jpegs(OUT / f"jpegs-{args.default_n}", args.default_n)
        results["default_cold"] = compare(small, "default", 1, args.workers, 25, "default")
        results["default_warm"] = compare_warm(small, "default", 1, args.workers, 25)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
