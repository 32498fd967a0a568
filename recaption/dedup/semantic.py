"""Semantic duplicates, after SemDeDup (Abbas et al., 2023; NeMo Curator ships the same method):
image embeddings are clustered by spherical k-means, and within each cluster a record is a
duplicate when its cosine similarity to a record ranked before it reaches the threshold. The
rank is the survivor rule: closest to the cluster's centroid first, farthest first (the
paper's "hard" choice), or best score first; the first of each group survives.

Only pairs inside one cluster are compared, so the cost is the sum of the squared cluster
sizes, not n squared. A cluster larger than ``max_cluster`` (ten thousand copies of one stock
photo make one) is split by k-means again; one that does not split (identical vectors) is
compared in consecutive windows of ``max_cluster`` in rank order, and said in the stats.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recaption.io.signatures import order_of

KEEP_RULES = ("centroid", "farthest")  # or "score:NAME"


def encode_vector(vector: np.ndarray) -> str:
    """A compact, JSON-safe form of an embedding (float16, base64): 1.4 KB for 512 dimensions."""
    return base64.b64encode(np.asarray(vector, np.float16).tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16)


def vector_of(sig: dict[str, Any]) -> np.ndarray | None:
    """A signature's embedding, or None where it has none that decodes."""
    if not isinstance(sig.get("emb"), str):
        return None
    try:
        return decode_vector(sig["emb"])
    except ValueError:
        return None


def read_embeddings(signatures: Iterable[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[str], list[np.ndarray], list[float], int]:
    """(keys, ids, vectors, ranking scores, how many had no usable embedding) of signatures
    (``{"id", "emb", "score"}``); a record without one (or of another size than the first) is
    not compared."""
    keys: list[str] = []
    ids: list[str] = []
    rows: list[np.ndarray] = []
    scores: list[float] = []
    missing = 0
    for key, sig in signatures:
        vector = vector_of(sig)
        if vector is None or (rows and len(vector) != len(rows[0])):
            missing += 1
            continue
        keys.append(key)
        ids.append(sig["id"])
        rows.append(vector)
        scores.append(float(sig["score"]) if sig.get("score") is not None else -np.inf)
    return keys, ids, rows, scores, missing


@dataclass(frozen=True)
class SemanticRules:
    """How the semantic decision compares: thresholds reported (``what_if``), the survivor rule
    (``keep``), the largest cluster compared whole, the seed, the number of clusters."""

    what_if: tuple[float, ...] = (0.90, 0.95, 0.98)
    keep: str = "centroid"
    max_cluster: int = 10_000
    seed: int = 0
    clusters: int | str = "auto"

    def k_for(self, n: int) -> int:
        """The number of clusters: as set, or one per thousand records (at most 4,096: beyond
        that, clusters over max_cluster are split again in their own task)."""
        return int(self.clusters) if self.clusters != "auto" else max(1, min(4096, -(-n // 1000)))


@dataclass
class SemanticFound:
    """The records at or above the lowest what-if threshold, as (order, id, the id it means the
    same as, cosine) in input order; how many were embedded and missing; how many reach each
    threshold; the cluster counts (clusters, split, windowed)."""

    rows: list[tuple[int, str, str, float]]
    embedded: int
    missing: int
    at: list[int]
    counts: dict[str, int] = field(default_factory=dict)


def semantic_in_process(rules: SemanticRules, signatures: Iterable[tuple[str, dict[str, Any]]]) -> SemanticFound:
    """The semantic decision in one process, every embedding held (as float16)."""
    keys, ids, rows, scores, missing = read_embeddings(signatures)
    if not rows:
        return SemanticFound([], 0, missing, [0] * len(rules.what_if), {})
    x = unit_rows(np.stack(rows)).astype(np.float16)  # half the memory; each cluster is compared in float32
    rank: str | np.ndarray = np.asarray(scores) if rules.keep.startswith("score:") else rules.keep
    found = semantic_duplicates(x, rules.k_for(len(x)), rank, rules.max_cluster, rules.seed)
    low = min(rules.what_if)
    listed = [(order_of(keys[i]), ids[i], ids[int(found.of[i])], float(found.best[i])) for i in np.flatnonzero(found.best >= low)]
    at = [int((found.best >= t).sum()) for t in rules.what_if]
    return SemanticFound(listed, len(x), missing, at, {"clusters": found.clusters, "split": found.split, "windowed": found.windowed})


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); a zero row stays zero."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def spherical_kmeans(x: np.ndarray, k: int, iterations: int = 10, seed: int = 0, chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels and unit centroids of unit vectors ``x`` (rows), by cosine similarity."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centroids = np.asarray(x[rng.choice(n, k, replace=False)], np.float32)
    labels = np.full(n, -1, np.int64)
    for _ in range(iterations):
        new = np.concatenate([np.argmax(np.asarray(x[s : s + chunk], np.float32) @ centroids.T, axis=1) for s in range(0, n, chunk)])
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(centroids)
        for s in range(0, n, chunk):
            np.add.at(sums, labels[s : s + chunk], np.asarray(x[s : s + chunk], np.float32))
        filled = np.linalg.norm(sums, axis=1) > 0
        centroids[filled] = unit_rows(sums[filled])  # an emptied cluster keeps its old centroid
    return labels, centroids


@dataclass
class SemanticResult:
    best: np.ndarray  # float32: each record's highest similarity to a record ranked before it (-1: none)
    of: np.ndarray  # int64: that record (-1: none)
    cluster: np.ndarray  # int64: the cluster each record was compared in
    clusters: int = 0
    split: int = 0  # clusters over max_cluster split again
    windowed: int = 0  # clusters that would not split, compared in windows


def semantic_duplicates(x: np.ndarray, k: int, rank: str | np.ndarray = "centroid", max_cluster: int = 10_000,
                        seed: int = 0, block: int = 2048) -> SemanticResult:
    """Within-cluster comparisons of unit vectors ``x``. ``rank``: "centroid", "farthest", or a
    score per record (higher ranks first); ties go to the earlier record."""
    if len(x) == 0:
        return compare_clusters(x, np.zeros(0, np.int64), np.zeros((0, 1), np.float32), rank, max_cluster, seed, block)
    labels, centroids = spherical_kmeans(x, k, seed=seed)
    return compare_clusters(x, labels, centroids, rank, max_cluster, seed, block)


def compare_clusters(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, rank: str | np.ndarray = "centroid",
                     max_cluster: int = 10_000, seed: int = 0, block: int = 2048) -> SemanticResult:
    """Each record against the records ranked before it in its cluster (``labels`` index
    ``centroids``); rows in input order, so that ties go to the earlier record."""
    n = len(x)
    result = SemanticResult(np.full(n, -1.0, np.float32), np.full(n, -1, np.int64), np.zeros(n, np.int64))
    if n == 0:
        return result
    groups = _groups(labels)
    result.clusters = len(groups)
    todo = [(members, centroids[label]) for label, members in groups]
    cluster_id = 0
    while todo:
        members, centroid = todo.pop()
        if len(members) > max_cluster:
            sub_labels, sub_centroids = spherical_kmeans(x[members], -(-2 * len(members) // max_cluster), seed=seed)
            parts = _groups(sub_labels)
            if len(parts) > 1:
                result.split += 1
                todo.extend((members[m], sub_centroids[label]) for label, m in parts)
                continue
            result.windowed += 1
        ordered = members[_rank(x[members], centroid, rank, members)]
        for start in range(0, len(ordered), max_cluster):
            window = ordered[start : start + max_cluster]
            best, of = _earlier_best(np.asarray(x[window], np.float32), block)
            result.best[window] = best
            result.of[window] = np.where(of >= 0, window[np.maximum(of, 0)], -1)
            result.cluster[window] = cluster_id
        cluster_id += 1
    return result


def _groups(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return [(int(labels[part[0]]), part) for part in np.split(order, cuts)]


def _rank(vectors: np.ndarray, centroid: np.ndarray, rank: str | np.ndarray, members: np.ndarray) -> np.ndarray:
    """Positions of ``members`` in survivor order (the first of a group survives)."""
    if isinstance(rank, str):
        similarity = np.asarray(vectors, np.float32) @ centroid
        key = -similarity if rank == "centroid" else similarity
    else:
        key = -np.asarray(rank, np.float64)[members]
    return np.lexsort((members, key))


def _earlier_best(e: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row, its highest cosine similarity to any row before it, and which."""
    s = len(e)
    best = np.full(s, -1.0, np.float32)
    of = np.full(s, -1, np.int64)
    for lo in range(1, s, block):
        hi = min(s, lo + block)
        sims = e[lo:hi] @ e[:hi].T  # rows lo..hi against everything up to hi
        sims[np.arange(hi - lo)[:, None] + lo <= np.arange(hi)[None, :]] = -np.inf  # only earlier rows
        at = np.argmax(sims, axis=1)
        best[lo:hi] = sims[np.arange(hi - lo), at]
        of[lo:hi] = at
    return best, of
