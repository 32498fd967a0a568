"""The local executor: streaming, shard-parallel on CPU cores.

The run itself (prepare, the segment loop, decisions, finish) is ``runners.driver``; the layer
the executors share (segments, shards, the sink) is ``runners.shards``. This module runs the
(segment, shard) tasks: in this process, or in a pool of worker processes, each holding one
``WorkerContext`` (the recipe's stages built once, the reader, the writer). With the default
recipe that is two passes::

    segment 0: read -> image_check -> clean_text -> token_budget -> intermediate + signatures
    dedup decides (main process, from signatures only)
    segment 1: intermediate -> apply dedup decisions -> write OUTPUT/data

Every (segment, shard) task writes its outputs atomically and then a small done marker
with its counts; a re-run skips the tasks with a marker and redoes the rest, so a crash or
Ctrl-C never duplicates or loses a record. Everything the run needs to resume (the
resolved recipe, the reader options, the shard plan) is saved in ``OUTPUT/_work``.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from recaption.io.base import InputShard
from recaption.io.run_folder import RunFolder
from recaption.runners.driver import Executor, RunContext
from recaption.runners.shards import RunError, Segment, WorkerContext, records_done, run_shard

# The context of this worker process, and the queue it reports records done to (a pool's
# initializer can only leave them here).
_WORKER: WorkerContext | None = None
_PROGRESS: Any = None


def _init_worker(settings: dict[str, Any], output: str, progress: Any, n_shards: int) -> None:
    global _WORKER, _PROGRESS  # noqa: PLW0603 - the process pool's initializer hands the context to the tasks this way
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _WORKER = WorkerContext.build(settings, RunFolder(Path(output)), n_shards)
    _PROGRESS = progress


def _run_task(seg_index: int, shard_dict: dict[str, Any]) -> dict[str, Any]:
    assert _WORKER is not None, "_init_worker runs first"
    return run_shard(_WORKER, seg_index, InputShard(**shard_dict), _PROGRESS.put if _PROGRESS is not None else None)


class LocalExecutor(Executor):
    """The shards in this process (one worker) or in a pool of ``workers`` processes."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        self.progress_queue: Any = None

    def start(self, run: RunContext) -> None:
        self.workers = max(1, min(self.workers, run.n_shards or 1))
        output = str(run.layout.root)
        if self.workers > 1:
            # spawn, not fork: workers start clean (no inherited threads or locks), the same
            # on every platform. An executor, not multiprocessing.Pool: a worker that dies
            # (killed for memory, a crash in a native library) fails the run with a message
            # instead of leaving its task waiting forever.
            ctx = mp.get_context("spawn")
            self.progress_queue = ctx.Queue()
            self.pool = ProcessPoolExecutor(self.workers, ctx, _init_worker, (run.settings, output, self.progress_queue, run.n_shards))
        else:
            _init_worker(run.settings, output, None, run.n_shards)  # this process is the worker
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return None  # a global stage decides in this process

    def run_segment(self, seg: Segment, todo: list[InputShard], progress: Callable[[int], None]) -> None:
        if self.pool is None:
            for shard in todo:
                progress(records_done(_run_task(seg.index, shard.to_dict())))
            return
        try:
            pending = {self.pool.submit(_run_task, seg.index, s.to_dict()) for s in todo}
            while pending:
                try:
                    progress(self.progress_queue.get(timeout=0.2))
                except queue.Empty:
                    pass
                finished = {f for f in pending if f.done()}
                for future in finished:
                    future.result()  # re-raises a worker's exception here
                pending -= finished
        except BrokenProcessPool as exc:
            raise RunError(
                f"a worker process died ({exc}); this is usually the system killing it for memory. "
                "Finished shards are kept: re-run the same command with fewer --workers or a smaller --shard-size."
            ) from None
        while True:  # drain what the last tasks reported
            try:
                progress(self.progress_queue.get_nowait())
            except queue.Empty:
                break

    def stop(self, failed: bool) -> None:
        if self.pool is not None:
            if failed:
                _stop_workers(self.pool)  # the dead worker, and the ones still alive, are reaped: no zombies
            else:
                self.pool.shutdown(wait=True, cancel_futures=True)
        if self.workers > 1:
            self.pool = self.progress_queue = None
            _stop_resource_tracker()


def _stop_resource_tracker() -> None:
    """Stop (and reap) multiprocessing's resource-tracker process once the workers are gone.

    It would otherwise outlive the run, be orphaned when the program exits, and stay a zombie
    under an init that does not reap (a container whose first process is a shell). Its
    semaphores (the pool's and the progress queue's) are released first, so nothing restarts it.
    """

    gc.collect()  # finalises the dropped queues' semaphores while the tracker still runs
    stop = getattr(getattr(resource_tracker, "_resource_tracker", None), "_stop", None)  # no public API
    if stop is not None:
        stop()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop now: cancel what has not started and kill what runs (its shard is redone on resume)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API for this
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.kill()
    for proc in processes:
        proc.join(timeout=10)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
