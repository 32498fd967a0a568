"""Reading the pairs to evaluate, running the evaluation, writing its files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recaption.eval.evaluate import EvalResult, EvalSettings, evaluate
from recaption.eval.tables import markdown, write_eval
from recaption.io import read_kept_pairs
from recaption.io.base import ReaderOptions
from recaption.io.run_folder import is_run_folder


def run_eval(input_path: Path, output: Path, settings: EvalSettings, fmt: str | None, options: ReaderOptions) -> tuple[EvalResult, str]:
    started = time.perf_counter()
    run_folder = input_path if is_run_folder(input_path) else None
    pairs, rejected = read_kept_pairs(input_path, fmt, options)
    result = evaluate(pairs, settings)
    meta: dict[str, Any] = {"input": str(input_path), "pairs": len(pairs), "rejected_records_left_out": rejected,
                            "settings": settings.__dict__, "total_seconds": time.perf_counter() - started}
    write_eval(output, result, meta, run_folder)
    where = f"{output}/eval.md, eval.csv, eval.json, eval.html" + (f"; section added to {run_folder / 'report.html'}" if run_folder else "")
    return result, markdown(result, meta) + f"\nrecaption: {len(pairs)} pairs evaluated ({rejected} rejected records left out); {where}"
