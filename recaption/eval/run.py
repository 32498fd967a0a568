"""Reading the pairs to evaluate, running the evaluation, writing its files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recaption.eval.evaluate import EvalResult, EvalSettings, evaluate
from recaption.eval.tables import markdown, write_eval
from recaption.io.base import ReaderOptions
from recaption.record import Pair


def read_pairs(path: Path, fmt: str | None, options: ReaderOptions) -> tuple[list[Pair], int]:
    """The pairs that were kept, and how many records came in rejected (left out)."""
    from recaption.io import open_reader  # noqa: PLC0415

    reader = open_reader(path, fmt, options)
    pairs, rejected = [], 0
    for shard in reader.plan():
        for pair in reader.read(shard):
            if pair.reject is None:
                pairs.append(pair)
            else:
                rejected += 1
    return pairs, rejected


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "report.html").exists() and (path / "data").is_dir()


def run_eval(input_path: Path, output: Path, settings: EvalSettings, fmt: str | None, options: ReaderOptions) -> tuple[EvalResult, str]:
    started = time.perf_counter()
    run_folder = input_path if is_run_folder(input_path) else None
    pairs, rejected = read_pairs(input_path / "data" if run_folder else input_path, fmt, options)
    result = evaluate(pairs, settings)
    meta: dict[str, Any] = {"input": str(input_path), "pairs": len(pairs), "rejected_records_left_out": rejected,
                            "settings": settings.__dict__, "total_seconds": time.perf_counter() - started}
    write_eval(output, result, meta, run_folder)
    where = f"{output}/eval.md, eval.csv, eval.json, eval.html" + (f"; section added to {run_folder / 'report.html'}" if run_folder else "")
    return result, markdown(result, meta) + f"\nrecaption: {len(pairs)} pairs evaluated ({rejected} rejected records left out); {where}"
