"""The dedup decision with its map and reduce as tasks, for runs larger than one process should
hold (``--runner ray``): the driver keeps only what is duplicated.

- map, a task per shard: the shard's signatures file becomes, per family, one Parquet file
  whose row groups are the family's partitions (``part`` sorted), plus the shard's copies of
  reference images. Returned: the files and the reference hits (as many as there are copies).
- reduce, a task per (family, partition): reads its row group of every map file, reduces it
  (``recaption.dedup.decision``) and returns the groups and pairs found: as many as there are
  duplicates.
- resolve, on the driver, as the reduce results arrive.

``LocalTasks`` runs the tasks one after another in this process (the tests compare it with the
in-memory decision); ``RayTasks`` runs them on a Ray cluster.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recaption.dedup.decision import (
    FAMILIES,
    Resolver,
    SignatureColumns,
    map_signatures,
    reduce_band,
    reduce_groups,
    reduce_image,
)
from recaption.dedup.hashes import HotBuckets

PARTITION_RECORDS = 200_000  # records per partition: a reduce task holds about this many records' rows


class LocalTasks:
    """Tasks run one after another in this process."""

    def map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> Iterator[Any]:
        for args in calls:
            yield fn(*args)


class RayTasks:
    """Tasks run on the Ray cluster this process is connected to, results taken as they finish."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray

    def map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> Iterator[Any]:
        remote = self.ray.remote(num_cpus=1)(fn)
        pending = [remote.remote(*args) for args in calls]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])


def partitions_for(records: int) -> int:
    return max(1, math.ceil(records / PARTITION_RECORDS))


def map_shard(stage: Any, shard_index: int, signatures: str, out: str, partitions: int) -> dict[str, Any]:
    """Task: one shard's signatures to partitioned family files; its copies of reference images."""
    cols = SignatureColumns(stage.minhasher.num_perm if stage.near_text else 0)
    with open(signatures, encoding="utf-8") as fh:
        for line in fh:
            key, sig = json.loads(line)
            cols.add(key, sig)
    hot = {name: HotBuckets() for name in ("contaminates_eval", "seen_before")}
    hits = stage.reference_hits(cols, hot)
    files: dict[str, str] = {}
    for family, table in map_signatures(cols, stage.rules(), partitions, stage.minhasher.band_hash).items():
        if table.num_rows == 0:
            continue
        table = table.sort_by("part")
        path = Path(out) / family / f"{shard_index:08d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = table.column("part").to_numpy()
        cuts = np.flatnonzero(np.diff(parts)) + 1
        with pq.ParquetWriter(path, table.schema) as writer:  # a row group per partition: a reduce reads only its own
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(parts)]):
                writer.write_table(table.slice(int(lo), int(hi - lo)))
        files[family] = str(path)
    return {"files": files, "hits": hits, "hot": {k: vars(v) for k, v in hot.items()}, "records": len(cols)}


def reduce_partition(stage: Any, family: str, files: list[str], part: int) -> dict[str, Any]:
    """Task: one partition of one family, read from every map file, reduced."""
    pieces = []
    for path in files:
        meta = pq.ParquetFile(path)
        col = meta.schema_arrow.get_field_index("part")
        for rg in range(meta.num_row_groups):
            stats = meta.metadata.row_group(rg).column(col).statistics
            if stats is None or stats.min <= part <= stats.max:
                piece = meta.read_row_group(rg)
                pieces.append(piece.filter(pc.equal(piece.column("part"), part)))
    hot = {"near_image": HotBuckets(), "near_text": HotBuckets()}
    if not pieces:
        return {"family": family, "tables": [], "hot": {k: vars(v) for k, v in hot.items()}}
    table = pa.concat_tables(pieces)
    rules = stage.rules()
    if family in ("ids", "sha", "text"):
        tables = [reduce_groups(table, {"ids": "id", "sha": "sha", "text": "text"}[family])]
    elif family == "image":
        tables = list(reduce_image(table, rules, hot["near_image"]))
    else:
        tables = list(reduce_band(table, rules, hot["near_text"]))
    return {"family": family, "tables": tables, "hot": {k: vars(v) for k, v in hot.items()}}


def _add_hot(into: dict[str, HotBuckets], found: dict[str, dict[str, int]]) -> None:
    for name, counts in found.items():
        h = into[name]
        h.buckets += counts["buckets"]
        h.searches += counts["searches"]
        h.largest = max(h.largest, counts["largest"])


def decide_sharded(stage: Any, tasks: Any, shards: list[tuple[int, str]], work: str, records: int,
                   partitions: int | None = None) -> dict[str, Any]:
    """``stage``'s decision over the signatures files ``shards`` ((shard index, path), in input
    order), with ``tasks`` running the map and the reduce."""
    from recaption.stages.dedup import HOT_FAMILIES  # noqa: PLC0415 - the stage imports this module lazily

    out = Path(work)
    shutil.rmtree(out, ignore_errors=True)  # what an interrupted decision left
    parts = partitions or partitions_for(records)
    hot = {name: HotBuckets() for name in HOT_FAMILIES}
    hits: dict[str, dict[int, Any]] = {}
    files: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for result in tasks.map(map_shard, [(stage, index, path, str(out), parts) for index, path in shards]):
        for family, path in result["files"].items():
            files[family].append(path)
        for kind, found in result["hits"].items():
            hits.setdefault(kind, {}).update(found)
        _add_hot(hot, result["hot"])
    resolver = Resolver(stage.rules())
    calls = [(stage, family, sorted(paths), p) for family, paths in files.items() if paths for p in range(parts)]
    for result in tasks.map(reduce_partition, calls):
        if result["tables"]:
            resolver.add(result["family"], *result["tables"])
        _add_hot(hot, result["hot"])
    decisions = stage.resolve(resolver, hits, hot)
    shutil.rmtree(out, ignore_errors=True)
    return decisions
