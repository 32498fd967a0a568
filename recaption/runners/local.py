"""The local runner: streaming, shard-parallel on CPU cores, resumable.

A recipe is cut into *segments* at its global stages (dedup): each segment runs on every
shard independently (in parallel), and a global stage decides between two segments from
small per-record signatures. With the default recipe that is two passes::

    segment 0: read -> image_check -> clean_text -> token_budget -> intermediate + signatures
    dedup decides (main process, from signatures only)
    segment 1: intermediate -> apply dedup decisions -> write OUTPUT/data

Every (segment, shard) task writes its outputs atomically and then a small done marker
with its counts; a re-run skips the tasks with a marker and redoes the rest, so a crash or
Ctrl-C never duplicates or loses a record. Everything the run needs to resume (the
resolved recipe, the reader options, the shard plan) is saved in ``OUTPUT/_work``.

OUTPUT layout::

    data/part-NNNNN.*        kept pairs, in the input's format unless asked otherwise
    rejects/part-NNNNN[.STAGE].jsonl   every rejected record with its stage and reason
    stats.json, report.html
    _work/                   run settings, shard plan, done markers, intermediates
"""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from recaption import __version__
from recaption.errors import Interrupted, RecaptionError
from recaption.io import default_output_format, open_reader, open_writer
from recaption.io.base import READ_STAGE, InputShard, ReaderOptions, Writer, atomic_path, remove_stale_temporaries
from recaption.io.jsonl import write_jsonl
from recaption.io.parquet import ParquetReader, ParquetWriter
from recaption.recipe import Recipe, recipe_from_dict
from recaption.record import Pair
from recaption.report.sample import ReportSampler
from recaption.stages.base import DEFAULT_STOP_AFTER_FAILURES, Decision, GlobalStage, Stage, StageCounters, StageError

WRITE_STAGE = "write"
RESUME_MAY_CHANGE = ("stop_after_failures",)  # settings a resumed run takes from its own command
# Errors of the output as a whole (disk full, read-only, quota), not of one record: they stop the run.
FATAL_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}


class RunInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped the run; finished shards are kept for the re-run."""


class RunError(RecaptionError):
    """The run cannot start or go on; the message says why and what to do."""


@dataclass
class RunConfig:
    input: str
    output: str
    recipe: Recipe
    input_format: str | None = None
    output_format: str | None = None
    reader: ReaderOptions = field(default_factory=ReaderOptions)
    workers: int = 1
    keep_work: bool = False
    embed_images: bool = False  # Parquet output holds every image's bytes

    def settings(self) -> dict[str, Any]:
        """What must match for a re-run to resume rather than start afresh."""
        return {
            "version": __version__,
            "input": str(Path(self.input).resolve()),
            "input_format": self.input_format,
            "output_format": self.output_format,
            "embed_images": self.embed_images,
            "reader": asdict(self.reader),
            # Where stages run on Ray does not change a record, nor does when to give up on a
            # failing stage: a run may resume under other placements, another runner, another
            # --stop-after-failures.
            "recipe": {k: v for k, v in self.recipe.to_dict().items() if k not in ("ray", "stop_after_failures")},
            "stop_after_failures": self.recipe.stop_after_failures,
        }


def worker_recipe(settings: dict[str, Any]) -> dict[str, Any]:
    """The recipe as the workers build it: the saved one, with this run's failure limit."""
    return {**settings["recipe"], "stop_after_failures": settings.get("stop_after_failures", DEFAULT_STOP_AFTER_FAILURES)}


LOCK_NAME = ".recaption.lock"  # held by the run writing to an OUTPUT, with who holds it inside


def refuse_a_file(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise RunError(f"{root} is a file; OUTPUT must be a folder (new or from an earlier run)")


@contextmanager
def output_lock(root: Path) -> Iterator[None]:
    """Hold OUTPUT for one run at a time: a second run on it (or an --overwrite of it) is told who
    holds it, instead of deleting the first run's temporaries from under it."""
    refuse_a_file(root)
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise RunError(f"cannot write to {root}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunError(f"{root} is in use by another recaption run ({holder}); wait for it to end or choose another OUTPUT") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        # A run refused before it wrote anything leaves no folder behind.
        if created and {p.name for p in root.iterdir()} == {LOCK_NAME}:
            shutil.rmtree(root, ignore_errors=True)
        os.close(fd)  # closing releases the lock; the file stays (removing it would race a waiting run)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


@dataclass
class Segment:
    index: int
    entry: GlobalStage | None  # the global stage whose decisions open this segment
    stages: list[Stage]
    exit: GlobalStage | None  # the global stage that needs this segment's signatures


def cut_segments(stages: list[Stage]) -> list[Segment]:
    segments = [Segment(0, None, [], None)]
    for stage in stages:
        if isinstance(stage, GlobalStage):
            segments[-1].exit = stage
            segments.append(Segment(len(segments), stage, [], None))
        else:
            segments[-1].stages.append(stage)
    return segments


class OutputLayout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.rejects = root / "rejects"
        self.work = root / "_work"
        self.settings = self.work / "run.json"
        self.plan = self.work / "plan.json"
        self.stats = root / "stats.json"
        self.report = root / "report.html"

    def done(self, seg: int, shard: str) -> Path:
        return self.work / "done" / f"seg{seg}-{shard}.json"

    def intermediate(self, seg: int) -> Path:
        return self.work / f"seg{seg}"

    def signatures(self, seg: int, shard: str) -> Path:
        return self.work / f"seg{seg}" / f"{shard}.signatures.jsonl"

    def decisions(self, seg: int, shard: str) -> Path:
        return self.work / f"decisions{seg}" / f"{shard}.json"

    def decided(self, seg: int) -> Path:
        return self.work / f"decisions{seg}" / "_DONE"

    def rejects_file(self, seg: int, shard: str, entry: GlobalStage | None) -> Path:
        return self.rejects / (f"{shard}.jsonl" if entry is None else f"{shard}.{entry.name}.jsonl")


# --- the work of one (segment, shard) task; runs in a worker process -----------------------

_STATE: dict[str, Any] = {}


def _init_worker(settings: dict[str, Any], output: str, progress: Any, n_shards: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    recipe = recipe_from_dict(worker_recipe(settings))
    reader_options = ReaderOptions(**settings["reader"])
    reader = open_reader(settings["input"], settings["input_format"], reader_options)
    layout = OutputLayout(Path(output))
    _STATE.update(
        recipe=recipe,
        reader=reader,
        layout=layout,
        writer=output_writer(settings, layout),
        segments=cut_segments(recipe.build()),
        progress=progress,
        n_shards=n_shards,
    )


def output_writer(settings: dict[str, Any], layout: OutputLayout) -> Writer:
    """The writer of the run's kept pairs, as the settings ask."""
    return open_writer(settings["resolved_output_format"], layout.data, settings.get("embed_images", False))


def gallery_share(gallery: int, n_shards: int) -> int:
    """How many gallery candidates (with thumbnails) one shard keeps.

    The gallery is the records with the smallest id hashes over the whole run; one shard
    holds about gallery / n_shards of them. Keeping three times that (plus a few) keeps
    the gallery exact in all but vanishingly rare cases while making a fraction of the
    thumbnails that keeping the full gallery per shard would.
    """
    return min(gallery, 3 * gallery // max(n_shards, 1) + 4)


def _batches(pairs: Any, size: int) -> Any:
    batch: list[Pair] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class ShardSink:
    """Where the records of one (segment, shard) task go, whichever runner ran the stages.

    Kept pairs go to the output writer (last segment) or to the intermediate Parquet the
    next segment reads, with the exit stage's signatures beside; rejects to their file;
    the report sample is taken on the way. ``finish`` writes the done marker last, so a
    shard counts as done only once everything it wrote is in place.
    """

    def __init__(self, layout: OutputLayout, seg: Segment, last: bool, shard: InputShard, writer: Any, recipe: Recipe, n_shards: int) -> None:
        self.layout, self.seg, self.shard = layout, seg, shard
        self.last = last
        self.sink_writer = writer if last else ParquetWriter(layout.intermediate(seg.index), typed=False)
        self.sampler = ReportSampler(  # reject examples from every segment, the gallery from the last
            gallery=gallery_share(recipe.report.get("gallery", 48), n_shards),
            examples_per_reason=recipe.report.get("examples_per_reason", 3),
        )
        self.rejects: list[dict[str, Any]] = []
        self.signatures: list[list[Any]] = []
        self.n_out = 0
        self._add: Any = None

    @contextmanager
    def open(self) -> Iterator[ShardSink]:
        with self.sink_writer.open_shard(self.shard.name) as add:
            self._add = add
            yield self
        self._add = None

    def put(self, pair: Pair) -> None:
        if pair.reject is None:
            try:
                # The writers make everything they store before writing a byte, so a record
                # that cannot be written (its image gone, a value no format holds) is refused
                # whole, and becomes a reject instead of stopping the shard.
                self._add(pair)
            except (OSError, ValueError, TypeError, UnicodeError, OverflowError, RecursionError) as exc:
                if isinstance(exc, OSError) and exc.errno in FATAL_WRITE_ERRNOS:
                    raise
                pair.reject_with(WRITE_STAGE, "unwritable", f"{type(exc).__name__}: {exc}"[:300])
        if pair.reject is not None:
            self.rejects.append(pair.to_dict())
            self.sampler.rejected(pair)
            return
        if self.seg.exit is not None:
            self.signatures.append([record_key(self.shard.index, self.n_out), self.seg.exit.signature(pair)])
        if self.last:
            self.sampler.kept(pair)
        self.n_out += 1

    def finish(self, n_in: int, stage_counts: dict[str, Any], seconds: float) -> dict[str, Any]:
        seg, layout = self.seg, self.layout
        write_jsonl(layout.rejects_file(seg.index, self.shard.name, seg.entry), self.rejects)
        if seg.exit is not None:
            write_jsonl(layout.signatures(seg.index, self.shard.name), self.signatures)
        marker = {
            "segment": seg.index,
            "shard": self.shard.name,
            "input": n_in if seg.index == 0 else 0,
            "kept": self.n_out,
            "rejected": dict(Counter(r["reject"]["stage"] + "/" + r["reject"]["reason"] for r in self.rejects)),
            "stages": stage_counts,
            "seconds": seconds,
            "report": self.sampler.to_dict(),
        }
        _write_json(layout.done(seg.index, self.shard.name), marker)
        return marker


def read_segment_source(layout: OutputLayout, seg_index: int, shard: InputShard, reader: Any) -> tuple[Any, dict[str, Decision]]:
    """The records a segment starts from: the input shard for the first, the previous
    segment's intermediate (and the global stage's decisions for it) for the others."""
    if seg_index == 0:
        return reader.read(shard), {}
    inter = layout.intermediate(seg_index - 1) / f"{shard.name}.parquet"
    source = ParquetReader(inter).read(InputShard(0, shard.name, {"file": str(inter), "row_groups": _row_groups(inter)}))
    decisions = {k: Decision(**d) for k, d in _read_json(layout.decisions(seg_index, shard.name)).items()}
    return source, decisions


def _run_task(seg_index: int, shard_dict: dict[str, Any]) -> dict[str, Any]:
    shard = InputShard(**shard_dict)
    layout: OutputLayout = _STATE["layout"]
    segments: list[Segment] = _STATE["segments"]
    seg = segments[seg_index]
    last = seg_index == len(segments) - 1
    start = time.perf_counter()
    source, decisions = read_segment_source(layout, seg_index, shard, _STATE["reader"])

    read_counts = StageCounters()
    n_in = 0
    for stage in seg.stages + ([seg.entry] if seg.entry else []):
        stage.reset_counters()
    batch_size = max([s.batch_size for s in seg.stages] or [64])
    sink = ShardSink(layout, seg, last, shard, _STATE["writer"], _STATE["recipe"], _STATE["n_shards"])
    with sink.open():
        for batch in _batches(source, batch_size):
            if seg_index == 0:
                read_counts.seen += len(batch)
                for p in batch:
                    if p.reject is not None:
                        read_counts.rejected[p.reject.key] += 1
                    else:
                        read_counts.kept += 1
            if seg.entry is not None:
                seg.entry.apply(batch, [record_key(shard.index, n_in + i) for i in range(len(batch))], decisions)
            n_in += len(batch)
            for stage in seg.stages:
                for start_i in range(0, len(batch), stage.batch_size):
                    stage(batch[start_i : start_i + stage.batch_size])
            for pair in batch:
                sink.put(pair)
            if _STATE["progress"] is not None:
                _STATE["progress"].put(len(batch))

    stage_counts = {s.name: s.counters.to_dict() for s in ([seg.entry] if seg.entry else []) + seg.stages}
    if seg_index == 0:
        stage_counts = {READ_STAGE: read_counts.to_dict(), **stage_counts}
    return sink.finish(n_in, stage_counts, time.perf_counter() - start)


def record_key(shard_index: int, position: int) -> str:
    """The key a global stage files a record's signature and decision under: its shard and
    its position among the shard's kept records (which the next segment reads in order)."""
    return f"{shard_index}:{position}"


def _row_groups(path: Path) -> list[int]:
    import pyarrow.parquet as pq  # noqa: PLC0415 - only segments after a global stage need it

    return list(range(pq.ParquetFile(path).metadata.num_row_groups))


# --- the driver ----------------------------------------------------------------------------


class LocalRunner:
    def __init__(self, config: RunConfig, show_progress: bool = True) -> None:
        self.config = config
        self.layout = OutputLayout(Path(config.output))
        self.show_progress = show_progress

    def _prepare(self) -> tuple[dict[str, Any], list[InputShard]]:
        settings = self.config.settings()
        layout = self.layout
        if layout.settings.exists():
            saved = _read_json(layout.settings)
            changed = sorted(k for k in settings if saved.get(k) != settings[k] and k not in RESUME_MAY_CHANGE)
            if changed:
                raise RunError(
                    f"{layout.root} already holds a run with other settings ({', '.join(changed)} differ). "
                    "Re-run with the same command to resume, choose a new OUTPUT, or pass --overwrite."
                )
            saved.update({k: settings[k] for k in RESUME_MAY_CHANGE})
            plan = [InputShard(**s) for s in _read_json(layout.plan)]
            removed = remove_stale_temporaries(layout.root)
            if removed and self.show_progress:
                print(f"resuming: removed {removed} unfinished file(s) of the interrupted run", file=sys.stderr)
            return saved, plan
        refuse_a_file(layout.root)
        leftovers = {p.name for p in layout.root.iterdir()} - {LOCK_NAME} if layout.root.exists() else set()
        if leftovers == {layout.work.name}:
            # A run stopped before its plan was saved (run.json is written last): nothing of it
            # can be resumed, and nothing of it is worth keeping. Start afresh.
            shutil.rmtree(layout.work)
        elif leftovers:
            raise RunError(f"{layout.root} exists and is not empty, and holds no recaption run; choose a new OUTPUT")
        reader = open_reader(self.config.input, self.config.input_format, self.config.reader)
        plan = reader.plan()
        settings["resolved_input_format"] = reader.format
        settings["resolved_output_format"] = settings["output_format"] or default_output_format(reader)
        output_writer(settings, layout)  # an output option the format cannot honour stops the run here
        layout.work.mkdir(parents=True, exist_ok=True)
        _write_json(layout.plan, [s.to_dict() for s in plan])
        _write_json(layout.settings, settings)  # written last: it marks the plan as complete
        return settings, plan

    def run(self) -> dict[str, Any]:
        settings, plan = self._prepare()
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
                _init_worker(settings, str(self.layout.root), None, len(plan))
                signal.signal(signal.SIGINT, signal.default_int_handler)
            for seg in segments:
                if seg.entry is not None:
                    self._decide(seg, plan)
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
            return self._finish(settings, plan, segments)
        except KeyboardInterrupt:
            raise RunInterrupted(f"interrupted while writing the report; run the same command again to finish ({self.layout.root}).") from None

    def _describe(self, seg: Segment, segments: list[Segment]) -> str:
        names = ([seg.entry.name] if seg.entry else []) + [s.name for s in seg.stages]
        if seg.index == 0:
            names = ["read"] + names
        if seg.index == len(segments) - 1:
            names.append("write")
        return f"[{seg.index + 1}/{len(segments)}] " + " > ".join(names)

    def _run_segment(self, seg: Segment, segments: list[Segment], todo: list[InputShard], pool: Any, progress_queue: Any) -> None:
        if not todo:
            return
        if seg.index > 0:
            total = sum(_read_json(self.layout.done(seg.index - 1, s.name))["kept"] for s in todo)
        else:  # known up front for line, row and file lists; a tar's count is not (no ETA then)
            sizes = [s.spec.get("records") for s in todo]
            total = None if None in sizes else sum(sizes)
        bar = tqdm(total=total, desc=self._describe(seg, segments), unit="pair", disable=not self.show_progress, dynamic_ncols=True)
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

    def _decide(self, seg: Segment, plan: list[InputShard]) -> None:
        assert seg.entry is not None
        if self.layout.decided(seg.index).exists():
            return
        start = time.perf_counter()
        counted = [0]

        def signatures() -> Any:  # streamed: the stage keeps only what it needs of each
            for shard in plan:
                with open(self.layout.signatures(seg.index - 1, shard.name), encoding="utf-8") as fh:
                    for line in fh:
                        counted[0] += 1
                        key, sig = json.loads(line)
                        yield key, sig

        decisions = seg.entry.decide(signatures())
        by_shard: dict[str, dict[str, Any]] = {s.name: {} for s in plan}
        names = {str(s.index): s.name for s in plan}
        while decisions:  # popped as they are filed, so the two never both hold everything
            key, decision = decisions.popitem()
            by_shard[names[key.split(":", 1)[0]]][key] = {k: v for k, v in vars(decision).items() if v}
        for name, items in by_shard.items():
            _write_json(self.layout.decisions(seg.index, name), items)
        _write_json(self.layout.decided(seg.index), {"records": counted[0], "seconds": time.perf_counter() - start})

    def _finish(self, settings: dict[str, Any], plan: list[InputShard], segments: list[Segment]) -> dict[str, Any]:
        from recaption.report.html import write_report  # noqa: PLC0415 - jinja2 only when a run ends
        from recaption.report.sample import merge_samples  # noqa: PLC0415

        markers = [_read_json(self.layout.done(seg.index, s.name)) for seg in segments for s in plan]
        rejects_by_reason: Counter[str] = Counter()
        stage_totals: dict[str, StageCounters] = {}
        for m in markers:
            rejects_by_reason.update(m["rejected"])
            for name, counts in m["stages"].items():
                stage_totals.setdefault(name, StageCounters()).add(counts)
        last = len(segments) - 1
        n_in = sum(m["input"] for m in markers)
        n_out = sum(m["kept"] for m in markers if m["segment"] == last)
        n_rej = sum(rejects_by_reason.values())
        decide_seconds = {
            seg.entry.name: _read_json(self.layout.decided(seg.index))["seconds"] for seg in segments if seg.entry is not None
        }
        for name, seconds in decide_seconds.items():
            stage_totals[name].seconds += seconds
        stats = {
            "input": n_in,
            "output": n_out,
            "rejected": n_rej,
            "rejects_by_reason": dict(sorted(rejects_by_reason.items())),
            "stages": {name: c.to_dict() for name, c in stage_totals.items()},
            "shards": len(plan),
            "seconds": sum(m["seconds"] for m in markers) + sum(decide_seconds.values()),
            "recipe": settings["recipe"]["name"],
            "input_path": settings["input"],
            "input_format": settings["resolved_input_format"],
            "output_format": settings["resolved_output_format"],
        }
        if n_in != n_out + n_rej:
            raise RunError(f"accounting does not add up: {n_in} read, {n_out} written + {n_rej} rejected; please report this")
        stats["output_notes"] = output_writer(settings, self.layout).finish_dataset()
        _write_json(self.layout.stats, stats)
        report = self.config.recipe.report
        sample = merge_samples([m["report"] for m in markers], report.get("gallery", 48), report.get("examples_per_reason", 3))
        write_report(self.layout.report, stats, sample, settings)
        if not self.config.keep_work:
            for seg in segments[:-1]:
                shutil.rmtree(self.layout.intermediate(seg.index), ignore_errors=True)
        return stats


# What a user most likely got wrong when every record fails the same way.
_LIKELY_CAUSE = {
    "image_check/missing_file": "images missing: is --image-root right (image paths are relative to the JSONL's folder)?",
    "image_check/no_image": "records name no image: is --image-field right?",
    "image_check/not_downloaded": "images are URLs: download them first (img2dataset)",
    "read/missing_field": "a field is missing: are --text-field / --id-field / --image-field right?",
    "clean_text/no_text": "records hold no text: is --text-field right?",
    "read/malformed_json": "lines are not JSON: is --format right?",
}


def why_nothing_kept(stats: dict[str, Any]) -> str:
    """One line on why a run kept nothing, naming the likely cause when one reason dominates."""
    if not stats["input"]:
        return f"nothing kept: the input {stats.get('input_path', '')} holds no records"
    reasons = sorted(stats["rejects_by_reason"].items(), key=lambda kv: -kv[1])
    top, n = reasons[0]
    share = "all" if n == stats["input"] else f"{n} of"
    cause = _LIKELY_CAUSE.get(top)
    if cause:
        return f"nothing kept: {share} {stats['input']} pairs rejected as {top}; {cause}"
    return f"nothing kept: {share} {stats['input']} pairs rejected as {top}; see the rejects/ folder and report.html"


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
