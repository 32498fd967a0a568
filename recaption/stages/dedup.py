"""Duplicates: repeated ids, copies of evaluation images and of what earlier runs kept, exact
and near images, exact and near texts (``dedup``); images that mean the same (``semantic_dedup``).

The decision is map, reduce and resolve (``recaption.dedup.decision``): in one process for the
local runner, as tasks for the Ray runner (``decide_in_tasks``), with the same result. The
library finds the facts (which rule took a record, which record it copies); this module words
them as rejects, scores, findings and the report's cluster marks. The rules
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

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from recaption.dedup.decision import (
    DUPLICATE_ID,
    DUPLICATE_TEXT,
    EXACT_IMAGE,
    NEAR_IMAGE,
    REFERENCE,
    DecisionColumns,
    Found,
    Rules,
    decide_in_process,
)
from recaption.dedup.hashes import HOT_BUCKET
from recaption.dedup.index import ReferenceIndexError
from recaption.dedup.references import KIND_REASON, References, RefHit
from recaption.dedup.semantic import SemanticFound, SemanticRules, semantic_in_process
from recaption.dedup.sharded import TaskPool, decide_sharded, semantic_sharded
from recaption.dedup.text import MinHasher, normalise_text, text_hash
from recaption.io.signatures import Decision, Decisions, DecisionsByKey, key_of, order_of
from recaption.record import Pair
from recaption.stages.base import GlobalStage, StageError, register

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


def _hit_detail(hit: RefHit) -> str:
    return f"{hit.how} of {hit.ref_id!r} in {hit.source}" + (f" ({hit.distance} bits)" if hit.how != "exact copy" else "")


class DedupDecisions(Decisions):
    """The library's decision columns, worded as ``Decision`` objects when asked: a shard's at
    a time for the driver, which never holds them all as objects."""

    def __init__(self, columns: DecisionColumns, radius: int) -> None:
        self.columns, self.radius = columns, radius

    def decision(self, i: int) -> Decision:
        out = self.columns
        order, reason = int(out.every[i]), int(out.reason[i])
        d = Decision(show=self._show(i))
        if out.flagged[i]:
            hit = out.hits[order]
            d.meta["contaminates_eval"] = f"{hit.source}:{hit.ref_id}"
        if reason == DUPLICATE_ID:
            d.reject = ("duplicate_id", f"image_id {out.name(i)!r} already used by the record at {key_of(int(out.every[out.other[i]]))}")
        elif reason == REFERENCE:
            d.reject = (out.hits[order].reason, _hit_detail(out.hits[order]))
        elif reason in (EXACT_IMAGE, NEAR_IMAGE):
            d.reject = ("exact_image" if reason == EXACT_IMAGE else "near_image", f"duplicate of {out.name(int(out.other[i]))!r}")
        if out.text_count[i]:
            d.scores["text_dup_count"] = int(out.text_count[i])
            first = int(out.text_first[i])
            if first != i:
                d.meta["text_dup_of"] = out.name(first)
                if reason == DUPLICATE_TEXT:
                    d.reject = ("duplicate_text", f"same caption as {out.name(first)!r}")
        return d

    def _show(self, i: int) -> dict[str, Any] | None:
        """The report's mark of a record in a duplicate cluster it shows."""
        mark = self.columns.shown.get(i)
        if mark is None:
            return None
        out, k = self.columns, mark["cluster"]
        label = f"{out.name(k)} · {key_of(int(out.every[k]))}"
        if mark["role"] == "kept":
            return {"cluster": label, "role": "kept", "rule": "most pixels, then earliest, is kept"}
        exact = out.reason[i] == EXACT_IMAGE
        if exact:
            rule = f"exact copy (same sha256) of {out.name(int(out.other[i]))!r}"
        else:
            rule = f"near copy: perceptual hashes within {self.radius} bits (the mirror's and crop windows' count; chains join)"
        bits = mark["bits"]
        return {"cluster": label, "role": "dropped", "rule": rule, "distance": 0 if exact and bits is None else bits}

    def for_shard(self, shard_index: int) -> dict[str, Decision]:
        return {key_of(int(self.columns.every[i])): self.decision(int(i)) for i in self.columns.decided_in_shard(shard_index)}

    def __getitem__(self, key: str) -> Decision:
        row = self.columns.row_of(order_of(key))
        if row is None:
            raise KeyError(key)
        return self.decision(row)

    def __iter__(self) -> Iterator[str]:
        return (key_of(int(self.columns.every[i])) for i in self.columns.decided())

    def __len__(self) -> int:
        return len(self.columns.decided())


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

    def references(self) -> References:
        return References(tuple(self.eval_sets), tuple(self.against), flag_eval=self.eval_action == "flag",
                          radius=self.phash_radius if self.near_image else 0, hot_bucket=self.hot_bucket)

    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> Decisions:
        """In one process: every signature mapped at once, each family reduced as one partition
        (recaption.dedup.decision), then resolved."""
        try:
            found = decide_in_process(self.rules(), self.references(), signatures)
        except ReferenceIndexError as exc:
            raise StageError(f"dedup.{exc}") from exc
        return self._decisions(found)

    def decide_in_tasks(self, tasks: TaskPool, shards: list[tuple[int, str]], work: str, records: int) -> Decisions:
        """The same decision with the map and the reduce as tasks (``recaption.dedup.sharded``):
        the driver holds what is duplicated, not every record."""
        try:
            found = decide_sharded(self.rules(), self.references(), tasks, shards, work, records)
        except ReferenceIndexError as exc:
            raise StageError(f"dedup.{exc}") from exc
        return self._decisions(found)

    def _decisions(self, found: Found) -> Decisions:
        """The decisions, and the findings and counts they make."""
        decisions = DedupDecisions(found.columns, self.phash_radius)
        self.findings = {}
        for kind, hits in found.hits.items():
            self._reference_findings(kind, hits.checked, hits.hits, found.columns)
        for prefix, counted in found.hot.items():
            for name, value in counted.as_stats(prefix).items():
                self.stat(name, value)
        return decisions

    def _reference_findings(self, kind: str, checked: str, hits: dict[int, RefHit], columns: DecisionColumns) -> None:
        """Count and list the hits the decision applied (a record that went earlier, as a
        repeated id, or whose copy of an evaluation image was taken over by an earlier run's,
        is not one)."""
        reason = KIND_REASON[kind]
        flag = kind == "eval" and self.eval_action == "flag"
        applied = [o for o in sorted(hits) if columns.hits.get(o) is hits[o]]
        self.stat(reason, len(applied))
        rows = [hits[o].row for o in applied[: self.FINDINGS]]
        self.findings[reason] = {
            "title": "Copies of evaluation images" if kind == "eval" else "Already kept by earlier runs",
            "summary": f"{len(applied)} pair(s) {'flagged (meta.contaminates_eval)' if flag else f'rejected as dedup/{reason}'}, "
                       f"checked against {checked}" + (f"; the first {self.FINDINGS} listed" if len(applied) > self.FINDINGS else ""),
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

    def rules(self) -> SemanticRules:
        return SemanticRules(tuple(self.what_if), self.keep, self.max_cluster, self.seed, self.clusters)

    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> Decisions:
        return self.semantic_decisions(semantic_in_process(self.rules(), signatures))

    def decide_in_tasks(self, tasks: TaskPool, shards: list[tuple[int, str]], work: str, records: int) -> Decisions:
        """On a task pool: centroids from a sample, each cluster compared in a task (``recaption.dedup.sharded``)."""
        return self.semantic_decisions(semantic_sharded(self.rules(), tasks, shards, work))

    def semantic_decisions(self, found: SemanticFound) -> Decisions:
        """Decisions, counts and findings from the records at or above the lowest what-if
        threshold (``found.rows``: order, id, the id it means the same as, cosine; in input order)."""
        rows, embedded, missing, at, counts = found.rows, found.embedded, found.missing, found.at, found.counts
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
            return DecisionsByKey(decisions)
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
        return DecisionsByKey(decisions)

    def apply(self, batch: list[Pair], keys: list[str], decisions: Mapping[str, Decision]) -> list[Pair]:
        out = super().apply(batch, keys, decisions)
        if not self.keep_embedding:  # 1.4 KB of base64 per pair: training data does not need it
            for pair in batch:
                pair.scores.pop("image_embedding", None)
        return out
