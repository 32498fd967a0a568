"""What a change costs the normal path: the `clean` recipe on the same real-size JPEGs, this
checkout against another (a worktree of an earlier commit), runs interleaved, medians.

    git worktree add /tmp/before COMMIT
    python -m benchmarks.bench_clean_versions --code /tmp/before [--n 1000] [--repeats 3]

Each run is the whole CLI in a fresh process (`recaption run --recipe clean --workers 1`),
once with the input's own output format (JSONL: image paths) and once with WebDataset output
(every image's bytes read and copied by the writer).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import OUT, machine, real_size_jpegs

HERE = Path(__file__).resolve().parent.parent


def run(manifest: Path, output: Path, code: Path, fmt: str | None) -> float:
    shutil.rmtree(output, ignore_errors=True)
    args = [sys.executable, "-m", "recaption.cli", "run", str(manifest), str(output), "--recipe", "clean", "--workers", "1", "--no-progress"]
    if fmt:
        args += ["--output-format", fmt]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=code, env=dict(os.environ, PYTHONPATH=str(code)))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, required=True, help="the other checkout (e.g. a worktree of the commit before a change)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    manifest = real_size_jpegs(OUT / "clean_versions", args.n)
    print(machine())
    for fmt in (None, "webdataset"):
        times: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(args.repeats):
            for label, code in (("before", args.code.resolve()), ("now", HERE)):
                times[label].append(run(manifest, OUT / "clean_versions" / f"out-{label}", code, fmt))
        before, now = statistics.median(times["before"]), statistics.median(times["now"])
        runs = "; ".join(f"{k}: {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items())
        print(f"output {fmt or 'jsonl (the input format)'}: before {before:.2f} s, now {now:.2f} s (median of {args.repeats}); "
              f"now / before {now / before:.3f}; {args.n / now:.0f} pairs/s now  [{runs}]")


if __name__ == "__main__":
    main()
