"""A PyTorch model run through ONNX Runtime: exported once, on first use, to a file named by
the hash of its weights, and loaded from there by every later run and worker.

On one CPU core ONNX Runtime runs EfficientNet-Lite0 in 9 ms an image where eager PyTorch
takes 21 ms (42 ms in batches of 16; benchmarks/RESULTS.md, issue 20), with the same
probabilities to 1e-6.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recaption.models.embedding_cache import cache_root

OPSET = 17


def exported_model(make: Callable[[], Any], input_shape: tuple[int, ...], name: str, folder: Path | None = None) -> Path:
    """The ONNX file of the model ``make()`` builds (a ``torch.nn.Module`` in eval mode, built
    only when the file is not there yet) for inputs of ``input_shape`` (the first dimension is
    the batch and stays free), in ``folder`` (default: $RECAPTION_CACHE or ~/.cache/recaption,
    ``onnx/``). ``name`` must say what the weights are (their hash): a file is never checked
    against the model it was made from."""
    folder = folder or cache_root() / "onnx"
    path = folder / f"{name}-opset{OPSET}.onnx"
    if path.is_file():
        return path
    import torch  # noqa: PLC0415 - torch, loaded only where it is used

    folder.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: two workers exporting at once each rename a
    # whole file, and a reader never sees half of one.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on the model's Python code, not the user's business
            torch.onnx.export(make(), torch.zeros(*input_shape), tmp, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def cpu_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` threads (one worker per core: more
    only fight the other workers)."""
    import onnxruntime  # noqa: PLC0415 - ONNX Runtime, loaded only where it is used

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
