"""The dedup decision with its map and reduce as tasks, for runs larger than one process should
hold (``--runner ray``): the driver keeps only what is duplicated.

- map, a task per shard: the shard's signatures file becomes, per family, one Parquet file
  whose row groups are the family's partitions (``part`` sorted), plus the shard's copies of
  reference images. Returned: the files and the reference hits (as many as there are copies).
- reduce, a task per (family, partition): reads its row group of every map file, reduces it
  (``recaption.dedup.decision``) and returns the groups and pairs found: as many as there are
  duplicates.
- resolve, on the driver, as the reduce results arrive.

The tasks run on whatever ``TaskPool`` the caller gives (in this process, on a Ray cluster: the
pools belong to whoever runs the decision).
Everything a task takes is plain data (rules, reference paths, file paths), so any pool can
ship it to another process.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recaption.dedup.decision import (
    FAMILIES,
    HOT_FAMILIES,
    Found,
    Resolver,
    Rules,
    SignatureColumns,
    map_signatures,
    reduce_family,
    reference_hits,
    resolve,
)
from recaption.dedup.hashes import HotBuckets
from recaption.dedup.references import ReferenceHits, References
from recaption.dedup.semantic import SemanticFound, SemanticRules, compare_clusters, read_embeddings, spherical_kmeans, unit_rows
from recaption.io.signatures import order_of, read_signatures

PARTITION_RECORDS = 200_000  # records per partition: a reduce task holds about this many records' rows


class TaskPool(Protocol):
    """Runs a function over argument tuples somewhere (this process, a cluster) and yields the
    results as they finish, in any order."""

    def map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> Iterator[Any]: ...


def partitions_for(records: int) -> int:
    return max(1, math.ceil(records / PARTITION_RECORDS))


def map_shard(rules: Rules, references: References, shard_index: int, signatures: str, out: str, partitions: int) -> dict[str, Any]:
    """Task: one shard's signatures to partitioned family files; its copies of reference images."""
    cols = SignatureColumns(rules.num_perm if rules.near_text else 0)
    for key, sig in read_signatures(signatures):
        cols.add(key, sig)
    hot = {name: HotBuckets() for name in ("contaminates_eval", "seen_before")}
    hits = reference_hits(references, cols, hot)
    files: dict[str, str] = {}
    for family, table in map_signatures(cols, rules, partitions, rules.minhasher().band_hash).items():
        if table.num_rows == 0:
            continue
        files[family] = _write_partitioned(table, Path(out) / family / f"{shard_index:08d}.parquet")
    return {"files": files, "hits": hits, "hot": {k: vars(v) for k, v in hot.items()}, "records": len(cols)}


def _write_partitioned(table: pa.Table, path: Path) -> str:
    """``table`` sorted by partition, a row group per partition: a reduce reads only its own."""
    table = table.sort_by("part")
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = table.column("part").to_numpy()
    cuts = np.flatnonzero(np.diff(parts)) + 1
    with pq.ParquetWriter(path, table.schema) as writer:
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(parts)]):
            writer.write_table(table.slice(int(lo), int(hi - lo)))
    return str(path)


def _read_partition(files: list[str], part: int) -> pa.Table | None:
    """Partition ``part``'s rows of every file (only the row groups that can hold it are read)."""
    pieces = []
    for path in files:
        meta = pq.ParquetFile(path)
        col = meta.schema_arrow.get_field_index("part")
        for rg in range(meta.num_row_groups):
            stats = meta.metadata.row_group(rg).column(col).statistics
            if stats is None or stats.min <= part <= stats.max:
                piece = meta.read_row_group(rg)
                pieces.append(piece.filter(pc.equal(piece.column("part"), part)))
    return pa.concat_tables(pieces) if pieces else None


def reduce_partition(rules: Rules, family: str, files: list[str], part: int) -> dict[str, Any]:
    """Task: one partition of one family, read from every map file, reduced."""
    table = _read_partition(files, part)
    hot = {"near_image": HotBuckets(), "near_text": HotBuckets()}
    tables = reduce_family(family, table, rules, hot) if table is not None else []
    return {"family": family, "tables": tables, "hot": {k: vars(v) for k, v in hot.items()}}


def _add_hot(into: dict[str, HotBuckets], found: dict[str, dict[str, int]]) -> None:
    for name, counts in found.items():
        h = into[name]
        h.buckets += counts["buckets"]
        h.searches += counts["searches"]
        h.largest = max(h.largest, counts["largest"])


def decide_sharded(rules: Rules, references: References, tasks: TaskPool, shards: list[tuple[int, str]], work: str,
                   records: int, partitions: int | None = None) -> Found:
    """The decision over the signatures files ``shards`` ((shard index, path), in input order),
    with ``tasks`` running the map and the reduce; ``work`` a folder of its own, removed after."""
    out = Path(work)
    shutil.rmtree(out, ignore_errors=True)  # what an interrupted decision left
    indexed = references.indexed(out / "references")  # for the map tasks: not once per task process
    parts = partitions or partitions_for(records)
    hot = {name: HotBuckets() for name in HOT_FAMILIES}
    hits: dict[str, ReferenceHits] = {}
    files: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for result in tasks.map(map_shard, [(rules, indexed, index, path, str(out), parts) for index, path in shards]):
        for family, path in result["files"].items():
            files[family].append(path)
        for kind, found in result["hits"].items():
            hits.setdefault(kind, ReferenceHits(found.checked)).hits.update(found.hits)
        _add_hot(hot, result["hot"])
    resolver = Resolver(rules)
    calls = [(rules, family, sorted(paths), p) for family, paths in files.items() if paths for p in range(parts)]
    for result in tasks.map(reduce_partition, calls):
        if result["tables"]:
            resolver.add(result["family"], *result["tables"])
        _add_hot(hot, result["hot"])
    found = resolve(resolver, hits, hot)
    shutil.rmtree(out, ignore_errors=True)
    return found


# -- semantic dedup: k-means on a sample, records to their cluster's partition, clusters compared in tasks

SEMANTIC_SAMPLE = 200_000  # embeddings the driver fits the centroids on


def _embeddings(path: str) -> tuple[list[int], list[str], list[np.ndarray], list[float], int]:
    """A shard's embeddings (``read_embeddings``), keyed by record order."""
    keys, ids, rows, scores, missing = read_embeddings(read_signatures(path))
    return [order_of(k) for k in keys], ids, rows, scores, missing


def semantic_sample(path: str, quota: int, seed: int) -> dict[str, Any]:
    """Task: up to ``quota`` of a shard's embeddings, drawn at random; and how many it has."""
    _, _, rows, _, missing = _embeddings(path)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), min(quota, len(rows)), replace=False) if rows else []
    return {"sample": np.stack([rows[i] for i in sorted(pick)]) if len(pick) else None, "records": len(rows), "missing": missing}


def semantic_assign(shard_index: int, path: str, centroids: np.ndarray, out: str, partitions: int) -> str | None:
    """Task: a shard's records to the partition of their nearest centroid."""
    orders, ids, rows, scores, _ = _embeddings(path)
    if not rows:
        return None
    x = unit_rows(np.stack(rows))
    cluster = np.argmax(x @ centroids.T, axis=1).astype(np.int64)
    d = x.shape[1]
    table = pa.table({
        "part": (cluster % partitions).astype(np.int32), "cluster": cluster, "order": np.array(orders, np.int64),
        "id": pa.array(ids, pa.string()), "score": np.array(scores, np.float64),
        "vector": pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * d), len(x), [None, pa.py_buffer(x.astype(np.float16).tobytes())]),
    })
    return _write_partitioned(table, Path(out) / f"{shard_index:08d}.parquet")


def semantic_reduce(rules: SemanticRules, files: list[str], part: int, centroids: np.ndarray) -> dict[str, Any]:
    """Task: the clusters of one partition, each compared within itself; the records at or above
    the lowest what-if threshold, and how many reach each threshold."""
    table = _read_partition(files, part)
    thresholds = rules.what_if
    if table is None or table.num_rows == 0:
        return {"rows": [], "at": [0] * len(thresholds), "split": 0, "windowed": 0, "clusters": 0}
    table = table.sort_by("order")  # input order: ties go to the earlier record
    d = centroids.shape[1]
    x = np.frombuffer(table.column("vector").combine_chunks().buffers()[1], np.float16).reshape(-1, d)[: table.num_rows]
    labels = table.column("cluster").to_numpy()
    rank = table.column("score").to_numpy() if rules.keep.startswith("score:") else rules.keep
    found = compare_clusters(x, labels, centroids, rank, rules.max_cluster, rules.seed)
    orders, ids = table.column("order").to_numpy(), table.column("id").to_pylist()
    low = min(thresholds)
    rows = [(int(orders[i]), ids[i], ids[int(found.of[i])], float(found.best[i])) for i in np.flatnonzero(found.best >= low)]
    return {"rows": rows, "at": [int((found.best >= t).sum()) for t in thresholds], "split": found.split,
            "windowed": found.windowed, "clusters": found.clusters}


def semantic_sharded(rules: SemanticRules, tasks: TaskPool, shards: list[tuple[int, str]], work: str) -> SemanticFound:
    """The semantic decision with the records of each cluster compared in a task: the driver
    holds a sample of embeddings (for the centroids) and the duplicates."""
    out = Path(work)
    shutil.rmtree(out, ignore_errors=True)
    quota = max(1, math.ceil(SEMANTIC_SAMPLE / max(1, len(shards))))
    samples, embedded, missing = [], 0, 0
    for result in tasks.map(semantic_sample, [(path, quota, rules.seed + index) for index, path in shards]):
        if result["sample"] is not None:
            samples.append(result["sample"])
        embedded += result["records"]
        missing += result["missing"]
    if not samples:
        return SemanticFound([], embedded, missing, [0] * len(rules.what_if), {})
    sample = unit_rows(np.concatenate(samples))
    _, centroids = spherical_kmeans(sample, rules.k_for(embedded), seed=rules.seed)
    partitions = partitions_for(embedded)
    files = [f for f in tasks.map(semantic_assign, [(index, path, centroids, str(out), partitions) for index, path in shards]) if f]
    rows: list[tuple[int, str, str, float]] = []
    at = [0] * len(rules.what_if)
    counts = {"clusters": 0, "split": 0, "windowed": 0}
    for result in tasks.map(semantic_reduce, [(rules, sorted(files), p, centroids) for p in range(partitions)]):
        rows.extend(result["rows"])
        at = [a + b for a, b in zip(at, result["at"])]
        for k in counts:
            counts[k] += result[k]
    shutil.rmtree(out, ignore_errors=True)
    return SemanticFound(sorted(rows), embedded, missing, at, counts)
