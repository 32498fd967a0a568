"""The default recipe's rate per core, side by side with the code path it replaced (issue 20).

The same real-size JPEGs as the other throughput benchmarks (the first ``--n``), through
``recaption run`` with 1 and 2 workers (shards of 50, so that both have work), for each path in turn and ``--repeats`` times,
interleaved so that a busy spell of the shared machine hits both alike; medians compared.
Paths: ``onnx`` (the default: the classifier in ONNX Runtime) and ``torch`` (the classifier in
eager PyTorch, as before; ``--set classify.backend=torch``). NudeNet's post-processing is the
array one in both (it gives the same detections; its own gain is measured in-process by
``bench_taggers``). Also the largest process's peak RSS (a worker's, with the models).

    python -m benchmarks.bench_default_recipe [--n 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics

from benchmarks.harness import OUT, real_size_jpegs, run_cli

PATHS = {"onnx": [], "torch": ["--set", "classify.backend=torch"]}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    full = real_size_jpegs(OUT / "jpegs-2000", 2000)
    manifest = full.parent / f"pairs-{args.n}.jsonl"
    manifest.write_text("\n".join(open(full).read().splitlines()[: args.n]) + "\n")
    runs: dict[tuple[str, int], list[tuple[float, int]]] = {}
    out = OUT / "default-recipe"
    # one untimed run: the ONNX export is made once per machine (the cache), not per run
    shutil.rmtree(out, ignore_errors=True)
    run_cli("run", str(manifest), str(out), "--workers", "1", "--no-progress")
    for _ in range(args.repeats):
        for path, extra in PATHS.items():
            for workers in (1, 2):
                shutil.rmtree(out, ignore_errors=True)
                seconds, peak = run_cli("run", str(manifest), str(out), "--workers", str(workers), "--shard-size", "50", "--no-progress", *extra)
                runs.setdefault((path, workers), []).append((args.n / seconds, peak))
                print(json.dumps({"path": path, "workers": workers, "pairs_per_s": round(args.n / seconds, 2), "peak_rss_mib": peak}), flush=True)
    shutil.rmtree(out, ignore_errors=True)
    results: dict = {"pairs": args.n, "repeats": args.repeats, "paths": {}}
    for path in PATHS:
        one = statistics.median(r for r, _ in runs[(path, 1)])
        two = statistics.median(r for r, _ in runs[(path, 2)])
        results["paths"][path] = {
            "pairs_per_s_1_worker": round(one, 2), "pairs_per_s_2_workers": round(two, 2),
            "per_core_1_worker": round(one, 2), "per_core_2_workers": round(two / 2, 2), "two_vs_one": round(two / one, 2),
            "peak_rss_mib_1_worker": max(p for _, p in runs[(path, 1)]), "peak_rss_mib_2_workers": max(p for _, p in runs[(path, 2)]),
        }
    results["onnx_vs_torch_1_worker"] = round(results["paths"]["onnx"]["pairs_per_s_1_worker"] / results["paths"]["torch"]["pairs_per_s_1_worker"], 2)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
