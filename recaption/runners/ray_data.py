"""The Ray executor: the run's segments, shards and outputs, on a Ray cluster (``--runner ray``).

Each segment (see ``runners.shards``) is one Ray Data pipeline over the shards still to do::

    shards -> read      a task per shard: the input shard, or the previous segment's
                        intermediate with the global stage's decisions applied
           -> steps     runs of plain stages as tasks; stages that load a model as actor
                        pools (the model loads once per actor), placed by the recipe's
                        ``ray:`` section (concurrency, num_gpus, num_cpus, batch_size)
           -> parts     each batch's rows, by shard, to parts files (``RunFolder.executor_parts``)

The executor counts the rows that reach the parts, shard by shard. Once all of a shard's
rows are in (the read step ends every shard with a row that says how many it read), a
commit task merges its parts back into input order and writes them through the shared
``ShardSink``: output or intermediate, rejects, signatures, done marker. The run itself
(prepare, the segment loop, decisions between segments, finish) is ``runners.driver``'s, as
for the local executor; dedup decides in Ray tasks (``RayTasks``).

So both executors write the same records, and resume is by shard: a shard with a done
marker is not redone, whichever executor wrote it. OUTPUT (and the input, and image paths)
must be on storage every node can reach.

Every row carries one pickled ``Carried``: the pair and the seconds each stage spent on it.
The commit's ``ShardSink`` counts the stages from where each record ended, as in the local
runner; the seconds are the stages' time.
"""

from __future__ import annotations

import heapq
import json
import logging
import pickle
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from recaption.io.atomic import atomic_path
from recaption.io.base import InputShard
from recaption.io.run_folder import RunFolder
from recaption.io.signatures import record_key
from recaption.recipe import Recipe, recipe_from_dict
from recaption.record import Pair
from recaption.runners.driver import Executor, RunContext
from recaption.runners.shards import (
    RunError,
    Segment,
    ShardSink,
    batches,
    cut_segments,
    output_writer,
    read_segment_source,
    reader_from_settings,
    stage_order,
    worker_recipe,
)
from recaption.runners.task_pools import RayTasks

if TYPE_CHECKING:
    from recaption.dedup.sharded import TaskPool
from recaption.stages.base import Stage

ROWS = pa.schema([("shard", pa.string()), ("pos", pa.int64()), ("total", pa.int64()), ("item", pa.large_binary())])
READ_CHUNK = 64  # rows per table the read step yields: small blocks keep the object store flowing
PART_ROW_GROUP = 64  # rows per row group in a part file: what a commit holds per part at a time
RAY_PARTS = "ray"  # the run folder's executor_parts: each batch's rows, by shard, until a commit merges them
MISSING_RAY = "--runner ray needs Ray Data: pip install 'recaption[ray]' (or pip install 'ray[data]')"


def import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415 - an optional extra
        import ray.data  # noqa: F401, PLC0415
    except ImportError as exc:
        raise RunError(MISSING_RAY) from exc
    # Ray's INFO lines on the console (cluster start, each pipeline's plan) would break up
    # the progress bar; they stay in Ray's session logs. Warnings and errors still show.
    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.WARNING)
    return ray


@dataclass
class Carried:
    """One record on its way through a segment's pipeline."""

    pair: Pair
    seconds: dict[int, float] = field(default_factory=dict)  # that stage order -> its share of the batch time
    # What a stage counted of its own over a batch rides on the batch's first record: exact over
    # the run, and per shard as near as batches that span two shards allow.
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)


def first_stage_position(seg: Segment) -> int:
    """Where ``seg.stages[0]`` sits in ``stage_order``."""
    return (seg.index == 0) + (seg.entry is not None)


# --- worker side: built once per worker process (tasks) or actor ---------------------------


@lru_cache(maxsize=4)
def _recipe(recipe_json: str) -> Recipe:
    """The run's recipe, read once per process from the JSON every task carries."""
    return recipe_from_dict(json.loads(recipe_json))


@lru_cache(maxsize=4)
def _segments(recipe_json: str) -> list[Segment]:
    """The recipe's stages, built once per process: plain stages with a table to load
    (spaCy, the CLIP vocabulary) set up once, not once per task."""
    return cut_segments(_recipe(recipe_json).build())


@lru_cache(maxsize=4)
def _reader(settings_json: str) -> Any:
    return reader_from_settings(json.loads(settings_json))


def _run_stage(position: int, items: list[Carried], work: Callable[[list[Pair]], Any], stage: Stage) -> None:
    """Run one stage over some records, noting its time per record (the commit counts the rest)."""
    live = [it for it in items if it.pair.reject is None]
    if not live:
        return
    stage.take_seconds()
    stage.take_metrics()
    work([it.pair for it in live])
    share = stage.take_seconds() / len(live)
    for it in live:
        it.seconds[position] = it.seconds.get(position, 0.0) + share
    found = stage.take_metrics()
    if found:
        mine = live[0].metrics.setdefault(position, {})
        for name, value in found.items():
            mine[name] = mine.get(name, 0) + value


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROWS)


def read_shard(shard_json: str, settings_json: str, recipe_json: str, output: str, seg_index: int) -> Iterator[pa.Table]:
    """Ray read task: one shard's records, then one end row with their count."""
    seg = _segments(recipe_json)[seg_index]
    shard = InputShard(**json.loads(shard_json))
    source, decisions = read_segment_source(RunFolder(Path(output)), seg_index, shard, _reader(settings_json) if seg_index == 0 else None)
    pos = 0
    for pairs in batches(source, READ_CHUNK):
        items = [Carried(p) for p in pairs]
        if seg.entry is not None:
            _apply_decisions(seg, shard, pos, items, decisions)
        yield _table([{"shard": shard.name, "pos": pos + i, "total": -1, "item": pickle.dumps(it)} for i, it in enumerate(items)])
        pos += len(items)
    yield _table([{"shard": shard.name, "pos": -1, "total": pos, "item": b""}])


def shard_datasource(ray: Any, shards: list[InputShard], **read_args: Any) -> Any:
    """A Ray Data source with one read task per shard. (Not ``from_items`` and a map: Ray
    bundles small input rows, so one task would read 64 shards one after the other.)"""

    class ShardSource(ray.data.Datasource):
        def estimate_inmemory_data_size(self) -> None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None) -> list[Any]:
            no_stats = ray.data.block.BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            return [ray.data.ReadTask(partial(read_shard, json.dumps(s.to_dict()), **read_args), no_stats) for s in shards]

    return ShardSource()


def _apply_decisions(seg: Segment, shard: InputShard, first: int, items: list[Carried], decisions: dict[str, Any]) -> None:
    entry = seg.entry
    assert entry is not None
    key_of = {id(it.pair): record_key(shard.index, first + i) for i, it in enumerate(items)}
    position = stage_order(seg).index(entry.name)
    _run_stage(position, items, lambda live: entry.apply(live, [key_of[id(p)] for p in live], decisions), entry)


def run_stages(batch: pa.Table, recipe_json: str, seg_index: int, indices: list[int]) -> pa.Table:
    """Ray task: some of a segment's plain stages over a batch of rows."""
    seg = _segments(recipe_json)[seg_index]
    return _apply(seg, indices, batch)


class StageActor:
    """Ray actor: a segment's model stages, loaded once, applied to batch after batch."""

    def __init__(self, recipe_json: str, seg_index: int, indices: list[int]) -> None:
        self.seg = cut_segments(_recipe(recipe_json).build())[seg_index]  # its own stage objects, not the task cache
        self.indices = indices

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _apply(self.seg, self.indices, batch)


def _apply(seg: Segment, indices: list[int], batch: pa.Table) -> pa.Table:
    rows = batch.to_pylist()
    # Safe to unpickle: these bytes were pickled by this job's own read task one step earlier
    # (read_shard), and travel only through Ray's object store, never through user files.
    items = [pickle.loads(r["item"]) if r["item"] else None for r in rows]
    carried = [it for it in items if it is not None]
    base = first_stage_position(seg)
    for i in indices:
        stage = seg.stages[i]
        _run_stage(base + i, carried, stage, stage)  # the stage runs in its own batch size
    for row, it in zip(rows, items):
        if it is not None:
            row["item"] = pickle.dumps(it)
    return _table(rows)


def write_parts(batch: pa.Table, parts: str) -> pa.Table:
    """Ray task: the batch's rows to one part file per shard; returns rows and ends per shard."""
    by_shard: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    totals: dict[str, int] = {}
    for shard, pos, total, item in zip(*(batch.column(c).to_pylist() for c in ("shard", "pos", "total", "item"))):
        if pos < 0:
            totals[shard] = total
        else:
            by_shard[shard].append((pos, item))
    for shard, rows in by_shard.items():
        rows.sort()  # each part in input order, so that a commit merges parts instead of sorting a shard
        target = Path(parts) / shard / f"{uuid.uuid4().hex}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({"pos": [r[0] for r in rows], "item": pa.array([r[1] for r in rows], pa.large_binary())})
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp, row_group_size=PART_ROW_GROUP)
    names = sorted(set(by_shard) | set(totals))
    return pa.table({
        "shard": names,
        "rows": [len(by_shard.get(n, ())) for n in names],
        "total": [totals.get(n, -1) for n in names],
    })


def _merged_parts(folder: Path) -> Iterator[Carried]:
    """A shard's records in input order, from its sorted part files, a row group at a time."""

    def rows(path: Path) -> Iterator[tuple[int, bytes]]:
        pf = pq.ParquetFile(path)
        for g in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(g)
            yield from zip(table.column("pos").to_pylist(), table.column("item").to_pylist())

    # Safe to unpickle: the part files are written by this run's own tasks under OUTPUT/_work,
    # the run's private folder (a dead run's parts are removed before a resume writes new ones);
    # input data never lands there.
    for _, item in heapq.merge(*(rows(p) for p in sorted(folder.glob("*.parquet")))):
        yield pickle.loads(item)


def commit_shard(settings: dict[str, Any], recipe_json: str, output: str, seg_index: int, shard_dict: dict[str, Any], n_shards: int, parts: str) -> dict[str, Any]:
    """Ray task: one shard's rows, back in input order, through the shared sink."""
    start = time.perf_counter()
    shard = InputShard(**shard_dict)
    segments = _segments(recipe_json)
    seg = segments[seg_index]
    last = seg_index == len(segments) - 1
    layout = RunFolder(Path(output))
    order = stage_order(seg)
    writer = output_writer(settings, layout) if last else None
    sink = ShardSink(layout, seg, last, shard, writer, _recipe(recipe_json), n_shards)
    seconds = dict.fromkeys(order, 0.0)
    metrics: dict[str, dict[str, float]] = {name: {} for name in order}
    folder = Path(parts) / shard.name
    with sink.open():
        for it in _merged_parts(folder):
            for position, spent in it.seconds.items():
                seconds[order[position]] += spent
            for position, found in it.metrics.items():
                for name, value in found.items():
                    metrics[order[position]][name] = metrics[order[position]].get(name, 0) + value
            sink.put(it.pair)
    marker = sink.finish(seconds, sum(seconds.values()) + time.perf_counter() - start, metrics)
    layout.discard(folder)
    return marker


def _root_cause(exc: BaseException) -> str:
    """The error inside Ray's wrappers (a task error holds the worker's exception as
    ``cause``), as one line."""
    seen = 0
    while seen < 10:
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc, seen = inner, seen + 1
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


@contextmanager
def _data_context(ray: Any, **settings: Any) -> Iterator[None]:
    """Ray Data settings for one pipeline, the caller's own restored after (a notebook's, say)."""
    context = ray.data.DataContext.get_current()
    saved = {key: getattr(context, key) for key in settings}
    for key, value in settings.items():
        setattr(context, key, value)
    if not settings.get("enable_progress_bars", True):
        ray.util.debug.log_once("ray_data_progress_manager_disabled")  # Ray need not warn that its bars are off
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(context, key, value)


# --- driver side ---------------------------------------------------------------------------


@dataclass
class Step:
    """One ``map_batches`` of a segment: some of its stages, as tasks or as an actor pool."""

    indices: list[int]
    actors: bool
    placement: dict[str, Any]  # the recipe's ray: entry for the stage, or {} for the defaults


@dataclass
class Placement:
    num_cpus: float
    num_gpus: float
    memory: float | None  # bytes, or None: Ray's default
    note: str = ""  # said to the user: a GPU the stages wanted that the cluster does not have


def place(step: Step, stages: list[Stage], cluster: dict[str, float]) -> Placement:
    """Where a step runs: the recipe's ``ray:`` entry where it says, else what its stages want
    (``Stage.wants``: the most any of them wants). A GPU the stages want is taken where the
    cluster has one, else they run on the CPU, with a note; one the recipe asks for and the
    cluster lacks stops the run."""
    name = "+".join(s.name for s in stages)
    wanted = [s.wants() for s in stages]
    gpus_wanted = max((w.gpus for w in wanted), default=0)
    memory_gb = max((w.memory_gb for w in wanted), default=0)
    num_cpus = step.placement.get("num_cpus", max((w.cpus for w in wanted), default=1))
    have = cluster.get("GPU", 0)
    note = ""
    if "num_gpus" in step.placement:
        num_gpus = step.placement["num_gpus"]
        if num_gpus and have < num_gpus:
            raise RunError(f"ray.{name}.num_gpus is {num_gpus} but the Ray cluster has {have:g} GPUs")
    elif gpus_wanted and have < gpus_wanted:
        num_gpus = 0
        note = f"{name} runs on the CPU: it would take {gpus_wanted:g} GPU{'s' if gpus_wanted != 1 else ''} and the Ray cluster has {have:g}"
    else:
        num_gpus = gpus_wanted
    return Placement(num_cpus, num_gpus, memory_gb * 2**30 if memory_gb else None, note)


def plan_steps(seg: Segment, ray_section: dict[str, dict[str, Any]]) -> list[Step]:
    """Runs of plain stages become one task step; model stages an actor step (consecutive
    ones share it, so that OCR, a classifier and a detector load into one actor); a stage
    the recipe places in its ``ray:`` section gets a step of its own."""
    steps: list[Step] = []
    placed = False  # the last step is a stage the recipe placed (even with no keys): it stays alone
    for i, stage in enumerate(seg.stages):
        if stage.name in ray_section:
            steps.append(Step([i], stage.loads_model, ray_section[stage.name]))
            placed = True
        elif steps and not placed and steps[-1].actors == stage.loads_model:
            steps[-1].indices.append(i)
        else:
            steps.append(Step([i], stage.loads_model, {}))
            placed = False
    return steps


class RayExecutor(Executor):
    """The shards as Ray Data pipelines on a local Ray or the cluster at ``address``."""

    name = "Ray"

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.ray = import_ray()  # without Ray, refused here: before OUTPUT is even made
        self.started = False
        self.run: RunContext  # given by start

    def start(self, run: RunContext) -> TaskPool:
        self.run = run
        self.recipe_json = json.dumps(worker_recipe(run.settings), sort_keys=True)
        self.started = self._connect(self.ray)
        return RayTasks(self.ray)  # dedup decides in tasks, not in this process

    def run_segment(self, seg: Segment, todo: list[InputShard], progress: Callable[[int], None]) -> None:
        self._run_segment_on_ray(self.ray, seg, todo, self.run.settings, self.recipe_json, self.run.n_shards, progress)

    def stop(self, failed: bool) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def finished(self, keep_work: bool) -> None:
        if not keep_work:
            self.run.layout.discard(self.run.layout.executor_parts(RAY_PARTS))

    def _connect(self, ray: Any) -> bool:
        """Join the cluster at --address, or start a local Ray; False when the caller already
        had one running (a test, a notebook), which is then left running."""
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, include_dashboard=False)
            else:
                ray.init(num_cpus=self.run.config.workers, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunError(f"cannot start or reach Ray{f' at {self.address}' if self.address else ''}: {exc}") from exc
        if self.run.show_progress:
            have = ray.cluster_resources()
            where = f"the cluster at {self.address}" if self.address else "a local Ray"
            print(f"running on {where}: {have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs", file=sys.stderr)
        return True

    def _pipeline(self, ray: Any, seg: Segment, steps: list[Step], todo: list[InputShard], settings: dict[str, Any], recipe_json: str, parts: Path) -> Any:
        resources = ray.cluster_resources()
        source = shard_datasource(ray, todo, settings_json=json.dumps(settings, sort_keys=True), recipe_json=recipe_json,
                                  output=str(self.run.layout.root), seg_index=seg.index)
        ds = ray.data.read_datasource(source, override_num_blocks=len(todo))  # as many blocks as shards: no splitting
        placed = [f"read{' + ' + seg.entry.name if seg.entry else ''} (a task per shard)"]
        for step in steps:
            stages = [seg.stages[i] for i in step.indices]
            name = "+".join(s.name for s in stages)
            # Tasks take whole blocks (a batch size would stop Ray fusing them with the read);
            # the stages cut them to their own batch sizes. Actors take the model's batches.
            batch_size = step.placement.get("batch_size") or (max(s.batch_size for s in stages) if step.actors else None)
            where = place(step, stages, resources)
            num_cpus, num_gpus = where.num_cpus, where.num_gpus
            if where.note and self.run.show_progress:
                print(where.note, file=sys.stderr)
            common: dict[str, Any] = {"batch_size": batch_size, "batch_format": "pyarrow", "num_cpus": num_cpus}
            if num_gpus:
                common["num_gpus"] = num_gpus
            if where.memory:
                common["memory"] = where.memory
            if step.actors:
                # by default the pool grows to as many actors as the cluster can hold
                fits = resources.get("GPU", 0) / num_gpus if num_gpus else resources.get("CPU", 1) / (num_cpus or 1)
                size = step.placement.get("concurrency") or [1, max(1, int(fits))]
                sizes = list(size) if isinstance(size, (list, tuple)) else [size, size]
                pool = ray.data.ActorPoolStrategy(min_size=sizes[0], max_size=sizes[-1])
                gpus = f", {num_gpus:g} GPU each" if num_gpus else ""
                placed.append(f"{name} ({sizes[0]}-{sizes[-1]} actors{gpus})" if sizes[0] != sizes[-1] else f"{name} ({sizes[0]} actors{gpus})")
                ds = ds.map_batches(StageActor, compute=pool, fn_constructor_kwargs={"recipe_json": recipe_json, "seg_index": seg.index, "indices": step.indices}, **common)
            else:
                if "concurrency" in step.placement:
                    size = step.placement["concurrency"]
                    common["compute"] = ray.data.TaskPoolStrategy(size=size[-1] if isinstance(size, (list, tuple)) else size)
                ds = ds.map_batches(run_stages, fn_kwargs={"recipe_json": recipe_json, "seg_index": seg.index, "indices": step.indices}, **common)
                placed.append(f"{name} (tasks)")
        if self.run.show_progress:  # what became an actor pool, and how large it may grow
            print(f"pass {seg.index + 1} on Ray: " + " > ".join(placed + ["write"]), file=sys.stderr)
        return ds.map_batches(write_parts, batch_size=None, batch_format="pyarrow", fn_kwargs={"parts": str(parts)})

    def _run_segment_on_ray(self, ray: Any, seg: Segment, todo: list[InputShard], settings: dict[str, Any], recipe_json: str,
                            n_shards: int, progress: Callable[[int], None]) -> None:
        parts = self.run.layout.executor_parts(RAY_PARTS, seg.index)
        for shard in todo:  # rows an interrupted run left for these shards are written again
            self.run.layout.discard(parts / shard.name)
        commit = ray.remote(num_cpus=1)(commit_shard)
        seen: dict[str, int] = defaultdict(int)
        expected: dict[str, int] = {}
        by_name = {s.name: s for s in todo}
        pending: list[Any] = []
        steps = plan_steps(seg, self.run.config.recipe.ray)
        # Ray Data holds back part of the cluster for each operator so that none starves. A
        # pipeline of tasks only is fused into one operator with the read, where that reserve
        # would only sit idle (on 2 CPUs it halved the rate); model pools keep it. Our bar
        # counts pairs; Ray's would count blocks per operator.
        with _data_context(ray, enable_progress_bars=False, op_resource_reservation_enabled=any(s.actors for s in steps)):
            ds = self._pipeline(ray, seg, steps, todo, settings, recipe_json, parts)  # lazy: runs in iter_rows
            try:
                for row in ds.iter_rows():
                    name = row["shard"]
                    seen[name] += row["rows"]
                    progress(row["rows"])
                    if row["total"] >= 0:
                        expected[name] = row["total"]
                    if name in expected and seen[name] == expected[name]:
                        pending.append(commit.remote(settings, recipe_json, str(self.run.layout.root), seg.index, by_name[name].to_dict(), n_shards, str(parts)))
                        del expected[name]
                        finished, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                        ray.get(finished)  # a commit that failed stops the run now, not at the end
                ray.get(pending)
            except Exception as exc:  # noqa: BLE001 - a Ray task failed: say so in one line, keep what is done
                raise RunError(f"the Ray job failed ({_root_cause(exc)}). "
                               f"Finished shards are kept; run the same command again to resume ({self.run.layout.root}).") from exc
