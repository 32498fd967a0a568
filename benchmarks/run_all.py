"""Run every benchmark and print the figures (copy them into benchmarks/RESULTS.md)."""

from __future__ import annotations

import datetime
import sys

from benchmarks import bench_memory, bench_near_dup, bench_taggers, bench_throughput
from benchmarks.harness import machine

if __name__ == "__main__":
    print(f"machine: {machine()}\ndate: {datetime.date.today()}")
    for bench in (bench_near_dup, bench_throughput, bench_memory, bench_taggers):
        print(f"\n## {bench.__name__}")
        sys.argv = [bench.__name__]
        bench.main()
