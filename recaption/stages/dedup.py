"""Duplicates: repeated ids, copies of evaluation images and of what earlier runs kept, exact
and near images, exact and near texts (``dedup``); images that mean the same (``semantic_dedup``).

The decision is map, reduce and resolve (``recaption.dedup.decision``): in one process for the
local runner, as tasks for the Ray runner (``decide_sharded``), with the same result. The rules
apply in this order, each among the records the earlier ones left:

- ``against`` / ``eval_sets``: a copy (exact, near, or a mirror image) of an image in an index
  or a run folder is rejected as ``seen_before`` / ``contaminates_eval``, naming it (or, with
  ``eval_action: flag``, kept and flagged).

Which copy survives is deterministic and documented:

- duplicate ``image_id``: the first record in input order keeps the id; later ones are
  rejected (``duplicate_id``).
- exact image (same sha256) and near image (perceptual hashes within ``phash_radius``
  bits): the copy with the most pixels survives, ties going to the earliest in input
  order; the others are rejected (``exact_image`` / ``near_image``) and name the survivor.
- exact text (same normalised caption) and near text (MinHash-LSH, Jaccard of character
  5-grams at least ``text_jaccard``) on *different* images: the seed's uniqueness rule. By
  default every member of a group is flagged (``scores["text_dup_count"]``,
  ``meta["text_dup_of"]`` naming the earliest); with ``text_action: reject`` all but the
  earliest are rejected (``duplicate_text``).

Near-image search never compares all pairs: a 64-bit hash within Hamming radius r of
another shares at least one of r+1 disjoint bit blocks with it exactly (pigeonhole), so
only hashes that collide on a block are compared. Each record searches with its hash, its
left-right mirror's (a flipped copy) and, with ``near_crops: true``, its crop windows' (a copy
cropped a little or given a border): two records are near copies when one's hash or mirror
hash is within the radius of any of the other's hashes (a window only within
``WINDOW_RADIUS``, and never against another window). Windows are off by default: on planted
copies they find 97-100 % of crops and borders, but also join a few distinct tiles of dark or
synthetic photos (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from recaption.dedup.decision import (
    HOT_FAMILIES,
    DecisionColumns,
    ReferenceHits,
    RefHit,
    Resolver,
    Rules,
    SignatureColumns,
    key_of,
    map_signatures,
    order_of,
    reduce_family,
)
from recaption.dedup.hashes import HOT_BUCKET, HotBuckets
from recaption.dedup.text import MinHasher, normalise_text, text_hash
from recaption.record import Pair
from recaption.stages.base import Decision, GlobalStage, StageError, register

WINDOW_RADIUS = 2  # measured on planted copies (benchmarks/bench_near_copies.py): 3 found no more, 1 fewer


def _paths(option: str, value: Any) -> list[str]:
    """A list of paths that exist, checked when the recipe is built, not after the first pass."""
    if value is None:
        return []
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise StageError(f"dedup.{option} is a list of paths (index files, run folders or datasets)")
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise StageError(f"dedup.{option}: no such file or folder: {', '.join(missing)}")
    return paths


def _reference_matches(image: dict[str, np.ndarray], ref: Any, radius: int, hot_bucket: int,
                       hot: HotBuckets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each record: the reference row it copies (-1: none), how ("exact copy", "near copy",
    "mirror image") and the distance in bits: an exact sha256 first, else the nearest of its hash
    and its mirror's to a reference hash."""
    from recaption.dedup.hashes import nearest_in  # noqa: PLC0415

    n = len(image["sha"])
    match = np.full(n, -1, np.int64)
    how = np.full(n, "", object)
    distance = np.zeros(n, np.int64)
    if not n or not len(ref):
        return match, how, distance
    ref_with_hash = np.flatnonzero(ref.has_phash)
    ref_phash = ref.phash[ref_with_hash]
    best = np.full(n, radius + 1, np.int64)
    for name, column, present in (("near copy", "phash", "has_phash"), ("mirror image", "mirror", "has_mirror")):
        have = np.flatnonzero(image[present])
        row, d = nearest_in(image[column][have], ref_phash, radius, hot_bucket, hot)
        better = (row >= 0) & (d < best[have])
        match[have[better]] = ref_with_hash[row[better]]
        best[have[better]] = d[better]
        how[have[better]] = name
    distance[:] = np.where(match >= 0, best, 0)
    # an exact copy by bytes wins over any near one (0: a sha256 nobody recorded)
    sha = image["sha"]
    order = np.argsort(ref.sha, kind="stable")
    at = np.minimum(np.searchsorted(ref.sha[order], sha), len(order) - 1)
    exact = (sha != 0) & (ref.sha[order][at] == sha)
    match[exact] = order[at[exact]]
    how[exact], distance[exact] = "exact copy", 0
    return match, how, distance


@register
class Dedup(GlobalStage):
    """Reject repeated ids, duplicate images and what a reference already holds; flag (or
    reject) captions shared by images."""

    name = "dedup"
    provides = ("score:text_dup_count",)
    requires = (("score:sha256",),)  # the image check's hashes: image duplicates are found from them

    FINDINGS = 200  # evaluation overlaps listed in stats.json and the report (all are counted)

    def facts_needed(self) -> list[set[str]]:
        return super().facts_needed() if self.exact_image or self.near_image or self.against or self.eval_sets else []

    def __init__(
        self,
        *,
        ids: bool = True,
        exact_image: bool = True,
        near_image: bool = True,
        phash_radius: int = 4,
        near_crops: bool = False,
        hot_bucket: int = HOT_BUCKET,
        against: list[str] | None = None,
        eval_sets: list[str] | None = None,
        eval_action: str = "reject",
        exact_text: bool = True,
        near_text: bool = True,
        text_jaccard: float = 0.8,
        text_action: str = "flag",
        text_num_perm: int = 64,
        text_bands: int = 16,
    ) -> None:
        super().__init__()
        if text_action not in ("flag", "reject"):
            raise StageError(f"dedup.text_action must be 'flag' or 'reject', not {text_action!r}")
        if eval_action not in ("flag", "reject"):
            raise StageError(f"dedup.eval_action must be 'flag' or 'reject', not {eval_action!r}")
        if not 0 <= phash_radius <= 32:
            raise StageError("dedup.phash_radius must be between 0 and 32 bits")
        if not 0 < text_jaccard <= 1:
            raise StageError("dedup.text_jaccard must be in (0, 1]")
        if hot_bucket < 2:
            raise StageError("dedup.hot_bucket must be at least 2")
        if text_num_perm % text_bands:
            raise StageError("dedup.text_num_perm must be a multiple of dedup.text_bands")
        self.against, self.eval_sets = _paths("against", against), _paths("eval_sets", eval_sets)
        self.eval_action = eval_action
        self.ids, self.exact_image, self.near_image = ids, exact_image, near_image
        self.phash_radius, self.near_crops, self.hot_bucket = phash_radius, near_crops, hot_bucket
        self.window_radius = min(phash_radius, WINDOW_RADIUS)
        self.exact_text, self.near_text = exact_text, near_text
        self.text_jaccard, self.text_action = text_jaccard, text_action
        self.minhasher = MinHasher(text_num_perm, text_bands)

    def signature(self, pair: Pair) -> dict[str, Any]:
        """Computed in the workers: hashes only, so the decision needs no text and no image."""
        selected = [c.text for c in pair.captions if c.selected] or pair.texts[:1]
        text = normalise_text(" ".join(selected))
        sig: dict[str, Any] = {
            "id": pair.image_id,
            "sha": (pair.scores.get("sha256") or "")[:16],  # 64 bits: collisions are not a concern here
            "phash": pair.scores.get("phash"),
            "phash_mirror": pair.scores.get("phash_mirror"),
            "phash_windows": pair.scores.get("phash_windows") if self.near_crops else None,
            "pixels": int(pair.scores.get("width", 0)) * int(pair.scores.get("height", 0)),
            "text": text_hash(text) if text else 0,
        }
        if text and self.near_text:
            sig["minhash"] = self.minhasher.signature(text).tobytes().hex()
        return sig

    def rules(self) -> Rules:
        return Rules(ids=self.ids, exact_image=self.exact_image, near_image=self.near_image, radius=self.phash_radius,
                     window_radius=self.window_radius, hot_bucket=self.hot_bucket, exact_text=self.exact_text,
                     near_text=self.near_text, jaccard=self.text_jaccard, text_action=self.text_action,
                     bands=self.minhasher.bands, num_perm=self.minhasher.num_perm)

    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Decision]:
        """In one process: every signature mapped at once, each family reduced as one partition
        (recaption.dedup.decision), then resolved; the Ray runner calls ``decide_sharded``."""
        cols = SignatureColumns(self.minhasher.num_perm if self.near_text else 0)
        for key, sig in signatures:
            cols.add(key, sig)
        rules = self.rules()
        resolver = Resolver(rules)
        hot = {name: HotBuckets() for name in HOT_FAMILIES}
        hits = self.reference_hits(cols, hot)
        for family, table in map_signatures(cols, rules, 1, self.minhasher.band_hash, in_process=True).items():
            resolver.add(family, *reduce_family(family, table, rules, hot))
        return self.resolve(resolver, hits, hot)

    def decide_sharded(self, tasks: Any, shards: list[tuple[int, str]], work: str, records: int) -> dict[str, Decision]:
        """The same decision with the map and the reduce as tasks (``recaption.dedup.sharded``):
        the driver holds what is duplicated, not every record."""
        from recaption.dedup.sharded import decide_sharded  # noqa: PLC0415

        return decide_sharded(self, tasks, shards, work, records)

    def references_indexed(self, folder: Path) -> Dedup:
        """This stage with every reference that is not an index file (a run folder, a dataset)
        indexed once, here, into ``folder``: tasks then read the index instead of each worker
        process hashing the source again. The index keeps the source's name, so hits read the
        same; a source that holds nothing is left as it is, for the task to say so."""
        import copy  # noqa: PLC0415

        from recaption.dedup.index import ReferenceIndexError, index_source, is_index_file  # noqa: PLC0415

        out = copy.copy(self)
        for attr, kind in (("eval_sets", "eval"), ("against", "kept")):
            paths = []
            for i, path in enumerate(getattr(self, attr)):
                if is_index_file(path):
                    paths.append(path)
                    continue
                try:
                    index = index_source(path, kind=kind)
                except ReferenceIndexError as exc:
                    raise StageError(f"dedup.{attr}: {exc}") from exc
                if not len(index):
                    paths.append(path)
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                index.save(folder / f"{attr}-{i}.parquet")
                paths.append(str(folder / f"{attr}-{i}.parquet"))
            setattr(out, attr, paths)
        return out

    def reference_hits(self, cols: SignatureColumns, hot: dict[str, HotBuckets]) -> dict[str, ReferenceHits]:
        """Each record that copies an image of the evaluation sets or of earlier runs, by kind:
        named, and rejected (or, for evaluation sets with ``eval_action: flag``, flagged)."""
        from recaption.dedup.index import ReferenceIndexError, cached_references  # noqa: PLC0415 - pyarrow, only when used

        hits: dict[str, ReferenceHits] = {}
        image = {name: cols.column(name) for name in ("sha", "phash", "has_phash", "mirror", "has_mirror")}
        for kind, paths in (("eval", self.eval_sets), ("kept", self.against)):
            if not paths:
                continue
            try:
                ref = cached_references(tuple(paths), kind)
            except ReferenceIndexError as exc:
                raise StageError(f"dedup.{'eval_sets' if kind == 'eval' else 'against'}: {exc}") from exc
            reason = "contaminates_eval" if kind == "eval" else "seen_before"
            match, how, distance = _reference_matches(image, ref, self.phash_radius if self.near_image else 0, self.hot_bucket, hot[reason])
            flag = kind == "eval" and self.eval_action == "flag"
            found = hits[kind] = ReferenceHits(", ".join(f"{s['name']} ({s['records']} images)" for s in ref.sources))
            for pos in np.flatnonzero(match >= 0):
                source, ref_id = ref.name(int(match[pos]))
                what = f"{how[pos]} of {ref_id!r} in {source}" + (f" ({distance[pos]} bits)" if how[pos] != "exact copy" else "")
                found.hits[order_of(cols.keys[pos])] = RefHit(reason, what, {"contaminates_eval": f"{source}:{ref_id}"} if flag else None,
                                                              [cols.ids[pos], source, ref_id, str(how[pos]), int(distance[pos])])
        return hits

    def resolve(self, resolver: Resolver, hits: dict[str, ReferenceHits], hot: dict[str, HotBuckets]) -> dict[str, Decision]:
        """The decisions from what the reduce found, and the findings and counts they make."""
        for kind, found in hits.items():
            resolver.add_reference_hits(kind, found.hits)
        decisions = resolver.resolve()
        self.findings = {}
        for kind, found in hits.items():
            self._reference_findings(kind, found, decisions)
        for prefix, counted in hot.items():
            for name, value in counted.as_stats(prefix).items():
                self.stat(name, value)
        return decisions  # a mapping made when read: written shard by shard, never all held as objects

    def _reference_findings(self, kind: str, found: ReferenceHits, decisions: DecisionColumns) -> None:
        """Count and list the hits the decision applied (a record that went earlier, as a
        repeated id, or whose copy of an evaluation image was taken over by an earlier run's,
        is not one)."""
        reason = "contaminates_eval" if kind == "eval" else "seen_before"
        flag = kind == "eval" and self.eval_action == "flag"
        applied = [o for o in sorted(found.hits) if decisions.hits.get(o) is found.hits[o]]
        self.stat(reason, len(applied))
        rows = [found.hits[o].row for o in applied[: self.FINDINGS]]
        self.findings[reason] = {
            "title": "Copies of evaluation images" if kind == "eval" else "Already kept by earlier runs",
            "summary": f"{len(applied)} pair(s) {'flagged (meta.contaminates_eval)' if flag else f'rejected as dedup/{reason}'}, "
                       f"checked against {found.checked}" + (f"; the first {self.FINDINGS} listed" if len(applied) > self.FINDINGS else ""),
            "count": len(applied), "columns": ["id", "source", "copies", "how", "bits"], "rows": rows,
        }



@register
class SemanticDedup(GlobalStage):
    """Remove images that mean the same (SemDeDup): embeddings from ``image_embed``, spherical
    k-means, and within each cluster a record whose cosine similarity to a record ranked before
    it reaches ``threshold`` is a duplicate of it. ``keep`` ranks: ``centroid`` (closest to the
    cluster's centroid survives), ``farthest`` (the paper's and NeMo Curator's "hard" choice), or
    ``score:NAME`` (the highest stored pair score, e.g. ``score:clip_score`` of the selected
    caption). The report's what-if table says how many would go at other thresholds."""

    name = "semantic_dedup"
    provides = ("score:semantic_dup_similarity",)
    requires = (("score:image_embedding",),)
    LISTED = 100

    def __init__(
        self,
        *,
        threshold: float = 0.95,
        clusters: int | str = "auto",
        keep: str = "centroid",
        action: str = "reject",
        max_cluster: int = 10_000,
        what_if: list[float] | tuple[float, ...] = (0.90, 0.95, 0.98),
        keep_embedding: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < threshold <= 1:
            raise StageError("semantic_dedup.threshold is a cosine similarity in (0, 1]")
        if clusters != "auto" and not (isinstance(clusters, int) and clusters >= 1):
            raise StageError("semantic_dedup.clusters is 'auto' (one per thousand records) or a number of clusters")
        if keep not in ("centroid", "farthest") and not (isinstance(keep, str) and keep.startswith("score:") and len(keep) > 6):
            raise StageError(f"semantic_dedup.keep is centroid, farthest or score:NAME, not {keep!r}")
        if action not in ("reject", "flag"):
            raise StageError(f"semantic_dedup.action must be 'reject' or 'flag', not {action!r}")
        if max_cluster < 2:
            raise StageError("semantic_dedup.max_cluster must be at least 2")
        self.threshold, self.clusters, self.keep, self.action = threshold, clusters, keep, action
        self.max_cluster, self.keep_embedding, self.seed = max_cluster, keep_embedding, seed
        self.what_if = sorted({float(t) for t in what_if} | {threshold})

    def signature(self, pair: Pair) -> dict[str, Any]:
        sig: dict[str, Any] = {"id": pair.image_id, "emb": pair.scores.get("image_embedding")}
        if self.keep.startswith("score:"):
            name = self.keep[6:]
            value = pair.scores.get(name)
            if value is None:
                selected = pair.selected()
                value = selected.scores.get(name) if selected is not None else None
            sig["score"] = value if isinstance(value, (int, float)) else None
        return sig

    def vector_of(self, sig: dict[str, Any]) -> np.ndarray | None:
        from recaption.dedup.semantic import decode_vector  # noqa: PLC0415

        if not isinstance(sig.get("emb"), str):
            return None
        try:
            return decode_vector(sig["emb"])
        except ValueError:
            return None

    def embeddings(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[str], list[np.ndarray], list[float], int]:
        """(keys, ids, vectors, ranking scores, how many had no usable embedding) of signatures;
        a record without one (or of another size than the first) is not compared."""
        keys: list[str] = []
        ids: list[str] = []
        rows: list[np.ndarray] = []
        scores: list[float] = []
        missing = 0
        for key, sig in signatures:
            vector = self.vector_of(sig)
            if vector is None or (rows and len(vector) != len(rows[0])):
                missing += 1
                continue
            keys.append(key)
            ids.append(sig["id"])
            rows.append(vector)
            scores.append(float(sig["score"]) if sig.get("score") is not None else -np.inf)
        return keys, ids, rows, scores, missing

    def k_for(self, n: int) -> int:
        """The number of clusters: as set, or one per thousand records (at most 4,096: beyond
        that, clusters over max_cluster are split again in their own task)."""
        return int(self.clusters) if self.clusters != "auto" else max(1, min(4096, -(-n // 1000)))

    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Decision]:
        from recaption.dedup.semantic import semantic_duplicates, unit_rows  # noqa: PLC0415

        keys, ids, rows, scores, missing = self.embeddings(signatures)
        if not rows:
            return self.semantic_decisions([], 0, missing, [0] * len(self.what_if), {})
        x = unit_rows(np.stack(rows)).astype(np.float16)  # half the memory; each cluster is compared in float32
        rank: str | np.ndarray = np.asarray(scores) if self.keep.startswith("score:") else self.keep
        found = semantic_duplicates(x, self.k_for(len(x)), rank, self.max_cluster, self.seed)
        low = min(self.what_if)
        listed = [(order_of(keys[i]), ids[i], ids[int(found.of[i])], float(found.best[i])) for i in np.flatnonzero(found.best >= low)]
        at = [int((found.best >= t).sum()) for t in self.what_if]
        return self.semantic_decisions(listed, len(x), missing, at, {"clusters": found.clusters, "split": found.split, "windowed": found.windowed})

    def decide_sharded(self, tasks: Any, shards: list[tuple[int, str]], work: str, records: int) -> dict[str, Decision]:
        """On Ray: centroids from a sample, each cluster compared in a task (``recaption.dedup.sharded``)."""
        from recaption.dedup.sharded import semantic_sharded  # noqa: PLC0415

        return semantic_sharded(self, tasks, shards, work, records)

    def semantic_decisions(self, rows: list[tuple[int, str, str, float]], embedded: int, missing: int, at: list[int],
                           counts: dict[str, int]) -> dict[str, Decision]:
        """Decisions, counts and findings from the records at or above the lowest what-if
        threshold: (order, id, the id it means the same as, cosine), in input order."""
        if missing:
            self.stat("no_embedding", missing)
        for name, value in (("clusters", counts.get("clusters", 0)), ("clusters_split", counts.get("split", 0)),
                            ("clusters_windowed", counts.get("windowed", 0))):
            if value:
                self.stat(name, value)
        self.findings = {}
        decisions: dict[str, Decision] = {}
        listed: list[list[Any]] = []
        for order, image_id, similar, cosine in rows:
            if cosine < self.threshold:
                continue
            decision = Decision(scores={"semantic_dup_similarity": round(cosine, 4)}, meta={"semantic_dup_of": similar})
            if self.action == "reject":
                decision.reject = ("semantic_duplicate", f"means the same as {similar!r} (cosine {cosine:.3f})")
            decisions[key_of(order)] = decision
            if len(listed) < self.LISTED:
                listed.append([image_id, similar, round(cosine, 3)])
        self.stat("semantic_duplicates", len(decisions))
        if not embedded:
            return decisions
        self.findings["what_if"] = {
            "title": "Semantic duplicates: what-if",
            "summary": f"{len(decisions)} of {embedded} embedded pairs {'rejected' if self.action == 'reject' else 'flagged'} at cosine "
                       f"similarity >= {self.threshold} ({counts.get('clusters', 0)} clusters, keep {self.keep})"
                       + (f"; {missing} pairs had no embedding" if missing else ""),
            "columns": ["threshold", "pairs removed", "share"],
            "rows": [[t, n, f"{100 * n / embedded:.1f} %"] for t, n in zip(self.what_if, at)],
        }
        self.findings["examples"] = {
            "title": "Semantic duplicates: examples", "summary": f"the first {len(listed)} of {len(decisions)}",
            "columns": ["id", "means the same as", "cosine"], "rows": listed,
        }
        return decisions

    def apply(self, batch: list[Pair], keys: list[str], decisions: dict[str, Decision]) -> list[Pair]:
        out = super().apply(batch, keys, decisions)
        if not self.keep_embedding:  # 1.4 KB of base64 per pair: training data does not need it
            for pair in batch:
                pair.scores.pop("image_embedding", None)
        return out
