"""What both runners share: the run's settings, segments and shards, the sink of a shard.

A recipe is cut into *segments* at its global stages (dedup): each segment runs on every
shard independently, and a global stage decides between two segments from small
per-record signatures (``runners.driver``). One (segment, shard) task reads its records
(``read_segment_source``: the input shard, or the previous segment's intermediate with the
decisions), runs the segment's stages, and hands every record to a ``ShardSink``, which
writes the kept ones (output or intermediate), the rejects, the signatures and, last, the
done marker. The local runner does that in worker processes, the Ray runner in Ray tasks;
the files are the same. Where each file goes is ``io.run_folder.RunFolder``'s to say.
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recaption import __version__
from recaption.errors import Interrupted, RecaptionError
from recaption.imaging import ImageFileError
from recaption.io import Reader, open_reader, open_writer
from recaption.io.base import READ_STAGE, InputShard, ReaderOptions, Writer
from recaption.io.jsonl import write_jsonl
from recaption.io.run_folder import RunFolder, write_json
from recaption.io.safejson import RecordProblem
from recaption.io.signatures import Decision, read_decisions, record_key, write_signatures
from recaption.recipe import Recipe, recipe_from_dict
from recaption.record import Pair
from recaption.report.sample import ReportSampler
from recaption.runners.intermediate import IntermediateWriter, read_intermediate
from recaption.stages.base import DEFAULT_STOP_AFTER_FAILURES, REPORT_MARK, GlobalStage, Stage

WRITE_STAGE = "write"
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


def reader_from_settings(settings: dict[str, Any]) -> Reader:
    """The run's input reader, as a worker builds it from the saved settings."""
    return open_reader(settings["input"], settings["input_format"], ReaderOptions(**settings["reader"]))


def worker_recipe(settings: dict[str, Any]) -> dict[str, Any]:
    """The recipe as the workers build it: the saved one, with this run's failure limit."""
    return {**settings["recipe"], "stop_after_failures": settings.get("stop_after_failures", DEFAULT_STOP_AFTER_FAILURES)}


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


def output_writer(settings: dict[str, Any], layout: RunFolder) -> Writer:
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


# The most bytes of images and carried members one batch holds: a batch is cut at ``size``
# records or at this, whichever comes first, so that a shard of large images (or a gzip bomb
# of a tar: each member within its limit, many of them) costs a worker bounded memory.
BATCH_BYTES = 256 * 1024 * 1024


def batches(pairs: Any, size: int, max_bytes: int = BATCH_BYTES) -> Any:
    batch: list[Pair] = []
    held = 0
    for pair in pairs:
        batch.append(pair)
        held += held_bytes(pair)
        if len(batch) >= size or held >= max_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def held_bytes(pair: Pair) -> int:
    """The bytes a pair holds in memory beyond its texts: its image and carried members."""
    image = len(pair.image) if isinstance(pair.image, (bytes, bytearray)) else 0
    return image + sum(len(data) for data in pair.extras.values())


def stage_order(seg: Segment) -> list[str]:
    """The stage names a segment's records pass, in order, as its done marker counts them."""
    return ([READ_STAGE] if seg.index == 0 else []) + ([seg.entry.name] if seg.entry else []) + [s.name for s in seg.stages]


class ShardCounts:
    """A shard's per-stage counts, derived from where each record ended: one rejected at stage
    k was seen by stages 0..k and kept by 0..k-1; one no stage rejected (kept, or refused by
    the writer) was seen and kept by all. The stages add only their time."""

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.position = {name: i for i, name in enumerate(order)}
        self.passed = 0
        self.rejected: Counter[tuple[int, str]] = Counter()
        self.seconds = dict.fromkeys(order, 0.0)
        self.metrics: dict[str, Counter[str]] = {name: Counter() for name in order}

    def add(self, pair: Pair) -> None:
        at = self.position.get(pair.reject.stage) if pair.reject is not None else None
        if at is None:
            self.passed += 1
        else:
            self.rejected[(at, pair.reject.key)] += 1  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(self.order):
            here = {key: n for (at, key), n in self.rejected.items() if at == i}
            beyond = self.passed + sum(n for (at, _), n in self.rejected.items() if at > i)
            out[name] = {"seen": beyond + sum(here.values()), "kept": beyond, "rejected": here, "seconds": self.seconds[name]}
            if self.metrics[name]:
                out[name]["metrics"] = dict(self.metrics[name])
        return out


class ShardSink:
    """Where the records of one (segment, shard) task go, whichever runner ran the stages.

    Kept pairs go to the output writer (last segment) or to the intermediate Parquet the
    next segment reads, with the exit stage's signatures beside; rejects to their file;
    the report sample is taken on the way. ``finish`` writes the done marker last, so a
    shard counts as done only once everything it wrote is in place.
    """

    def __init__(self, layout: RunFolder, seg: Segment, last: bool, shard: InputShard, writer: Any, recipe: Recipe, n_shards: int) -> None:
        self.layout, self.seg, self.shard = layout, seg, shard
        self.last = last
        self.sink_writer = writer if last else IntermediateWriter(layout.intermediate(seg.index))
        self.sampler = ReportSampler(  # reject examples from every segment, the gallery from the last
            gallery=gallery_share(recipe.report.get("gallery", 48), n_shards),
            examples_per_reason=recipe.report.get("examples_per_reason", 3),
        )
        self.rejects: list[dict[str, Any]] = []
        self.signatures: list[tuple[str, dict[str, Any]]] = []
        self.counts = ShardCounts(stage_order(seg))
        self.rejected_by: Counter[str] = Counter()
        self.n_in = 0
        self.n_out = 0
        self._add: Any = None

    @contextmanager
    def open(self) -> Iterator[ShardSink]:
        with self.sink_writer.open_shard(self.shard.name) as add:
            self._add = add
            yield self
        self._add = None

    def put(self, pair: Pair) -> None:
        self.n_in += 1
        mark = pair.meta.pop(REPORT_MARK, None)  # for the report, never written
        if mark:
            self.sampler.marked(pair, mark)
        if pair.reject is None:
            try:
                # The writers make everything they store before writing a byte, so a record
                # that cannot be written (its image gone, a value no format holds) is refused
                # whole, and becomes a reject instead of stopping the shard.
                self._add(pair)
            except (OSError, ValueError, TypeError, UnicodeError, OverflowError, RecursionError) as exc:
                if isinstance(exc, OSError) and exc.errno in FATAL_WRITE_ERRNOS:
                    raise
                # An image file that is no image by its bytes, or a record a reader would refuse
                # (records.check_readable), says so by its reason.
                reason = exc.reason if isinstance(exc, (ImageFileError, RecordProblem)) else "unwritable"
                pair.reject_with(WRITE_STAGE, reason, f"{type(exc).__name__}: {exc}"[:300])
        self.counts.add(pair)
        if pair.reject is not None:
            self.rejected_by[pair.reject.key] += 1
            self.rejects.append(pair.to_dict())
            self.sampler.rejected(pair)
            return
        if self.seg.exit is not None:
            self.signatures.append((record_key(self.shard.index, self.n_out), self.seg.exit.signature(pair)))
        if self.last:
            self.sampler.kept(pair)
        self.n_out += 1

    def finish(self, stage_seconds: dict[str, float], seconds: float, stage_metrics: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
        """The shard's files, then its done marker; ``stage_seconds`` and ``stage_metrics``: each
        stage's time on it and what it counted of its own."""
        n_in = self.n_in
        for name, spent in stage_seconds.items():
            self.counts.seconds[name] = self.counts.seconds.get(name, 0.0) + spent
        for name, found in (stage_metrics or {}).items():
            self.counts.metrics.setdefault(name, Counter()).update(found)
        stage_counts = self.counts.to_dict()
        seg, layout = self.seg, self.layout
        write_jsonl(layout.rejects_file(self.shard.name, seg.entry.name if seg.entry else None), self.rejects)
        if seg.exit is not None:
            write_signatures(layout.signatures(seg.index, self.shard.name), self.signatures)
        marker = {
            "segment": seg.index,
            "shard": self.shard.name,
            "input": n_in if seg.index == 0 else 0,
            "kept": self.n_out,
            "rejected": dict(self.rejected_by),
            "stages": stage_counts,
            "seconds": seconds,
            "report": self.sampler.to_dict(),
        }
        write_json(layout.done(seg.index, self.shard.name), marker)
        return marker


@dataclass
class WorkerContext:
    """What a worker (a process, an actor, a thread) builds once from the run's settings and
    every task it runs uses: the recipe's stages, the reader, the writer."""

    recipe: Recipe
    reader: Reader
    layout: RunFolder
    writer: Writer
    segments: list[Segment]
    n_shards: int

    @classmethod
    def build(cls, settings: dict[str, Any], layout: RunFolder, n_shards: int) -> WorkerContext:
        recipe = recipe_from_dict(worker_recipe(settings))
        return cls(recipe, reader_from_settings(settings), layout, output_writer(settings, layout), cut_segments(recipe.build()), n_shards)


def run_shard(ctx: WorkerContext, seg_index: int, shard: InputShard, on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One (segment, shard) task in this process: read, run the segment's stages batch by batch,
    sink; ``on_batch`` hears how many records each batch held. Returns the done marker."""
    segments = ctx.segments
    seg = segments[seg_index]
    last = seg_index == len(segments) - 1
    start = time.perf_counter()
    source, decisions = read_segment_source(ctx.layout, seg_index, shard, ctx.reader)
    n_in = 0
    timed = seg.stages + ([seg.entry] if seg.entry else [])
    for stage in timed:
        stage.take_seconds()  # what an earlier shard left
        stage.take_metrics()
    batch_size = max([s.batch_size for s in seg.stages] or [64])
    sink = ShardSink(ctx.layout, seg, last, shard, ctx.writer, ctx.recipe, ctx.n_shards)
    with sink.open():
        for batch in batches(source, batch_size):
            if seg.entry is not None:
                seg.entry.apply(batch, [record_key(shard.index, n_in + i) for i in range(len(batch))], decisions)
            n_in += len(batch)
            for stage in seg.stages:
                stage(batch)
            for pair in batch:
                sink.put(pair)
            if on_batch is not None:
                on_batch(len(batch))
    return sink.finish({s.name: s.take_seconds() for s in timed}, time.perf_counter() - start, {s.name: s.take_metrics() for s in timed})


def records_done(marker: dict[str, Any]) -> int:
    """How many records a finished (segment, shard) task took in, from its done marker: what
    the progress bar counts."""
    return marker["input"] if marker["segment"] == 0 else marker["kept"] + sum(marker["rejected"].values())


def read_segment_source(layout: RunFolder, seg_index: int, shard: InputShard, reader: Any) -> tuple[Any, dict[str, Decision]]:
    """The records a segment starts from: the input shard for the first, the previous
    segment's intermediate (and the global stage's decisions for it) for the others."""
    if seg_index == 0:
        return reader.pairs(shard), {}
    source = read_intermediate(layout.intermediate(seg_index - 1) / f"{shard.name}.parquet")
    return source, read_decisions(layout.decisions(seg_index, shard.name))


def describe(seg: Segment, segments: list[Segment]) -> str:
    """The progress bar's label for a segment: its place and its stages."""
    names = ([seg.entry.name] if seg.entry else []) + [s.name for s in seg.stages]
    if seg.index == 0:
        names = ["read"] + names
    if seg.index == len(segments) - 1:
        names.append("write")
    return f"[{seg.index + 1}/{len(segments)}] " + " > ".join(names)
