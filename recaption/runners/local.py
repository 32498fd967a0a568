"""The local runner: streaming, shard-parallel on CPU cores, resumable.

The shared layer (segments, shards, OUTPUT layout, the sink) is ``runners.shards``; the
prepare / decide / finish steps are ``runners.driver``. This module runs the (segment,
shard) tasks: in this process, or in a pool of worker processes, each holding one
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

import multiprocessing as mp
import os
import queue
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from recaption.io import Reader, Writer, open_reader
from recaption.io.base import InputShard, ReaderOptions
from recaption.io.run_folder import RunFolder, read_json
from recaption.io.signatures import record_key
from recaption.recipe import Recipe, recipe_from_dict
from recaption.runners.driver import RunDriver
from recaption.runners.shards import (
    RunConfig,
    RunError,
    RunInterrupted,
    Segment,
    ShardSink,
    batches,
    cut_segments,
    describe,
    output_writer,
    read_segment_source,
    worker_recipe,
)
from recaption.stages.base import StageError


@dataclass
class WorkerContext:
    """What a worker builds once and every task it runs uses."""

    recipe: Recipe
    reader: Reader
    layout: RunFolder
    writer: Writer
    segments: list[Segment]
    progress: Any  # a queue the worker reports pairs done to, or None
    n_shards: int


# The context of this worker process (a pool's initializer can only leave it here).
_WORKER: WorkerContext | None = None


def _init_worker(settings: dict[str, Any], output: str, progress: Any, n_shards: int) -> None:
    global _WORKER  # noqa: PLW0603 - the process pool's initializer hands the context to the tasks this way
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    recipe = recipe_from_dict(worker_recipe(settings))
    layout = RunFolder(Path(output))
    _WORKER = WorkerContext(
        recipe=recipe,
        reader=open_reader(settings["input"], settings["input_format"], ReaderOptions(**settings["reader"])),
        layout=layout,
        writer=output_writer(settings, layout),
        segments=cut_segments(recipe.build()),
        progress=progress,
        n_shards=n_shards,
    )


def _run_task(seg_index: int, shard_dict: dict[str, Any]) -> dict[str, Any]:
    assert _WORKER is not None, "_init_worker runs first"
    return run_shard(_WORKER, seg_index, shard_dict)


def run_shard(ctx: WorkerContext, seg_index: int, shard_dict: dict[str, Any]) -> dict[str, Any]:
    """One (segment, shard) task: read, run the segment's stages batch by batch, sink; returns the done marker."""
    shard = InputShard(**shard_dict)
    layout = ctx.layout
    segments = ctx.segments
    seg = segments[seg_index]
    last = seg_index == len(segments) - 1
    start = time.perf_counter()
    source, decisions = read_segment_source(layout, seg_index, shard, ctx.reader)

    n_in = 0
    timed = seg.stages + ([seg.entry] if seg.entry else [])
    for stage in timed:
        stage.take_seconds()  # what an earlier shard left
        stage.take_metrics()
    batch_size = max([s.batch_size for s in seg.stages] or [64])
    sink = ShardSink(layout, seg, last, shard, ctx.writer, ctx.recipe, ctx.n_shards)
    with sink.open():
        for batch in batches(source, batch_size):
            if seg.entry is not None:
                seg.entry.apply(batch, [record_key(shard.index, n_in + i) for i in range(len(batch))], decisions)
            n_in += len(batch)
            for stage in seg.stages:
                stage(batch)
            for pair in batch:
                sink.put(pair)
            if ctx.progress is not None:
                ctx.progress.put(len(batch))

    return sink.finish({s.name: s.take_seconds() for s in timed}, time.perf_counter() - start, {s.name: s.take_metrics() for s in timed})


class LocalRunner:
    def __init__(self, config: RunConfig, show_progress: bool = True) -> None:
        self.config = config
        self.driver = RunDriver(config, show_progress)
        self.layout = self.driver.layout
        self.show_progress = show_progress

    def run(self) -> dict[str, Any]:
        settings, plan = self.driver.prepare()
        segments = cut_segments(self.config.recipe.build())
        progress_queue = None
        pool = None
        workers = max(1, min(self.config.workers, len(plan) or 1))
        try:
            if workers > 1:
                # spawn, not fork: workers start clean (no inherited threads or locks), the same
                # on every platform. An executor, not multiprocessing.Pool: a worker that dies
                # (killed for memory, a crash in a native library) fails the run with a message
                # instead of leaving its task waiting forever.
                ctx = mp.get_context("spawn")
                progress_queue = ctx.Queue()
                pool = ProcessPoolExecutor(workers, ctx, _init_worker, (settings, str(self.layout.root), progress_queue, len(plan)))
            else:
                _init_worker(settings, str(self.layout.root), None, len(plan))  # this process is the worker
                signal.signal(signal.SIGINT, signal.default_int_handler)
            for seg in segments:
                if seg.entry is not None:
                    self.driver.decide(seg, plan)
                todo = [s for s in plan if not self.layout.done(seg.index, s.name).exists()]
                self._run_segment(seg, segments, todo, pool, progress_queue)
        except KeyboardInterrupt:
            if pool is not None:
                _stop_workers(pool)
                pool = None
            raise RunInterrupted(f"interrupted. Finished shards are kept; run the same command again to resume ({self.layout.root}).") from None
        except (StageError, OSError) as exc:
            if pool is not None:
                _stop_workers(pool)
                pool = None
            if isinstance(exc, OSError):
                raise
            raise RunError(str(exc)) from None
        except BrokenProcessPool as exc:
            if pool is not None:
                _stop_workers(pool)  # the dead worker, and the ones still alive, are reaped: no zombies
                pool = None
            raise RunError(
                f"a worker process died ({exc}); this is usually the system killing it for memory. "
                "Finished shards are kept: re-run the same command with fewer --workers or a smaller --shard-size."
            ) from None
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if workers > 1:
                pool = progress_queue = None
                _stop_resource_tracker()
        try:
            return self.driver.finish(settings, plan, segments)
        except KeyboardInterrupt:
            raise RunInterrupted(f"interrupted while writing the report; run the same command again to finish ({self.layout.root}).") from None

    def _run_segment(self, seg: Segment, segments: list[Segment], todo: list[InputShard], pool: Any, progress_queue: Any) -> None:
        if not todo:
            return
        if seg.index > 0:
            total = sum(read_json(self.layout.done(seg.index - 1, s.name))["kept"] for s in todo)
        else:  # known up front for line, row and file lists; a tar's count is not (no ETA then)
            sizes = [s.spec.get("records") for s in todo]
            total = None if None in sizes else sum(sizes)
        bar = tqdm(total=total, desc=describe(seg, segments), unit="pair", disable=not self.show_progress, dynamic_ncols=True)
        try:
            if pool is None:
                for shard in todo:
                    marker = _run_task(seg.index, shard.to_dict())
                    bar.update(marker["input"] if seg.index == 0 else marker["kept"] + sum(marker["rejected"].values()))
                return
            pending = {pool.submit(_run_task, seg.index, s.to_dict()) for s in todo}
            while pending:
                try:
                    bar.update(progress_queue.get(timeout=0.2))
                except queue.Empty:
                    pass
                finished = {f for f in pending if f.done()}
                for future in finished:
                    future.result()  # re-raises a worker's exception here
                pending -= finished
            while True:  # drain what the last tasks reported
                try:
                    bar.update(progress_queue.get_nowait())
                except queue.Empty:
                    break
        finally:
            bar.close()


def _stop_resource_tracker() -> None:
    """Stop (and reap) multiprocessing's resource-tracker process once the workers are gone.

    It would otherwise outlive the run, be orphaned when the program exits, and stay a zombie
    under an init that does not reap (a container whose first process is a shell). Its
    semaphores (the pool's and the progress queue's) are released first, so nothing restarts it.
    """
    import gc  # noqa: PLC0415
    from multiprocessing import resource_tracker  # noqa: PLC0415

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
