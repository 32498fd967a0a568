"""Duplicates: repeated ids, exact and near images, exact and near texts.

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
from typing import Any

import numpy as np

from recaption.dedup.groups import components, runs_of_equal
from recaption.dedup.hashes import HOT_BUCKET, HotBuckets, near_hash_pairs
from recaption.dedup.text import MinHasher, normalise_text, text_hash
from recaption.record import Pair
from recaption.stages.base import Decision, GlobalStage, StageError, register

WINDOWS = 9  # the image check's window hashes per record (stages.image.CROP_WINDOWS)
WINDOW_RADIUS = 2  # measured on planted copies (benchmarks/bench_near_copies.py): 3 found no more, 1 fewer


def _paths(option: str, value: Any) -> list[str]:
    """A list of paths that exist, checked when the recipe is built, not after the first pass."""
    if value is None:
        return []
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise StageError(f"dedup.{option} is a list of paths (index files, run folders or datasets)")
    from pathlib import Path  # noqa: PLC0415

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise StageError(f"dedup.{option}: no such file or folder: {', '.join(missing)}")
    return paths


def _reference_matches(image: dict[str, np.ndarray], members: np.ndarray, ref: Any, radius: int, hot_bucket: int,
                       stat: Any, reason: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each member: the reference row it copies (-1: none), how ("exact copy", "near copy",
    "mirror image") and the distance in bits: an exact sha256 first, else the nearest of its hash
    and its mirror's to a reference hash."""
    from recaption.dedup.hashes import nearest_in  # noqa: PLC0415

    match = np.full(len(members), -1, np.int64)
    how = np.full(len(members), "", object)
    distance = np.zeros(len(members), np.int64)
    if not len(members) or not len(ref):
        return match, how, distance
    ref_with_hash = np.flatnonzero(ref.has_phash)
    ref_phash = ref.phash[ref_with_hash]
    hot = HotBuckets()
    best = np.full(len(members), radius + 1, np.int64)
    for name, column, present in (("near copy", "phash", "has_phash"), ("mirror image", "mirror", "has_mirror")):
        have = np.flatnonzero(image[present][members])
        row, d = nearest_in(image[column][members[have]], ref_phash, radius, hot_bucket, hot)
        better = (row >= 0) & (d < best[have])
        match[have[better]] = ref_with_hash[row[better]]
        best[have[better]] = d[better]
        how[have[better]] = name
    distance[:] = np.where(match >= 0, best, 0)
    # an exact copy by bytes wins over any near one
    sha = image["sha"][members]
    ref_sha = np.where(ref.sha != 0, ref.sha, np.uint64(0))
    order = np.argsort(ref_sha, kind="stable")
    at = np.searchsorted(ref_sha[order], sha)
    at = np.minimum(at, len(order) - 1)
    exact = (sha != 0) & (ref_sha[order][at] == sha)
    match[exact] = order[at[exact]]
    how[exact], distance[exact] = "exact copy", 0
    for name, value in hot.as_stats(reason).items():
        stat(name, value)
    return match, how, distance


class _Columns:
    """Signatures as numpy columns, filled in chunks, so that deciding over millions of
    records costs tens of bytes per record instead of a Python dict each."""

    CHUNK = 65_536

    def __init__(self, num_perm: int) -> None:
        self.keys: list[str] = []
        self.ids: list[str] = []
        self.num_perm = num_perm  # 0: no MinHash column (near-text dedup is off)
        self._chunks: list[dict[str, np.ndarray]] = []
        self._fill = self.CHUNK

    def _new_chunk(self) -> None:
        c = self.CHUNK
        self._chunks.append({
            "sha": np.zeros(c, np.uint64), "phash": np.zeros(c, np.uint64), "has_phash": np.zeros(c, bool),
            "mirror": np.zeros(c, np.uint64), "has_mirror": np.zeros(c, bool),
            "windows": np.zeros((c, WINDOWS), np.uint64), "n_windows": np.zeros(c, np.int8),
            "pixels": np.zeros(c, np.int64), "text": np.zeros(c, np.uint64), "minhash": np.zeros((c, self.num_perm), np.uint32),
        })
        self._fill = 0

    def add(self, key: str, sig: dict[str, Any]) -> None:
        if self._fill == self.CHUNK:
            self._new_chunk()
        row, chunk = self._fill, self._chunks[-1]
        self.keys.append(key)
        self.ids.append(sig["id"])
        chunk["sha"][row] = int(sig["sha"] or "0", 16)
        if sig.get("phash"):
            chunk["phash"][row] = int(sig["phash"], 16)
            chunk["has_phash"][row] = True
        if sig.get("phash_mirror"):
            chunk["mirror"][row] = int(sig["phash_mirror"], 16)
            chunk["has_mirror"][row] = True
        windows = sig.get("phash_windows") or []
        if isinstance(windows, list):
            found = [int(w, 16) for w in windows[:WINDOWS] if isinstance(w, str)]
            chunk["windows"][row, : len(found)] = found
            chunk["n_windows"][row] = len(found)
        chunk["pixels"][row] = sig.get("pixels", 0)
        chunk["text"][row] = sig.get("text", 0)
        if self.num_perm and sig.get("minhash"):
            chunk["minhash"][row] = np.frombuffer(bytes.fromhex(sig["minhash"]), dtype=np.uint32)
        self._fill += 1

    def column(self, name: str) -> np.ndarray:
        """The whole column; its chunks are released, so ask for each column once."""
        if not self._chunks:  # no record at all: an empty column of the right shape
            width = {"minhash": self.num_perm, "windows": WINDOWS}.get(name)
            return np.zeros((0, width) if width is not None else 0, np.uint64)
        parts = [c.pop(name) for c in self._chunks]
        parts[-1] = parts[-1][: self._fill]
        return np.concatenate(parts)


@register
class Dedup(GlobalStage):
    """Reject repeated ids, duplicate images and what a reference already holds; flag (or
    reject) captions shared by images."""

    name = "dedup"
    provides = ("score:text_dup_count",)
    requires = (("score:sha256",),)  # the image check's hashes: image duplicates are found from them

    def facts_needed(self) -> list[set[str]]:
        return super().facts_needed() if self.exact_image or self.near_image or self.against or self.eval_sets else []
    AGREEMENT_CHUNK = 65_536
    FINDINGS = 200  # evaluation overlaps listed in stats.json and the report (all are counted)

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

    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Decision]:
        cols = _Columns(self.minhasher.num_perm if self.near_text else 0)
        for key, sig in signatures:
            cols.add(key, sig)
        n = len(cols.keys)
        ids, keys = cols.ids, cols.keys
        image = {name: cols.column(name) for name in ("sha", "phash", "has_phash", "mirror", "has_mirror", "pixels")}
        pixels = image["pixels"]
        alive = np.ones(n, dtype=bool)
        decisions: dict[str, Decision] = {}
        self.findings = {}

        def reject(i: int, reason: str, detail: str) -> None:
            decisions[keys[i]] = Decision(reject=(reason, detail))
            alive[i] = False

        if self.ids:
            first_of: dict[str, int] = {}
            for i, image_id in enumerate(ids):
                owner = first_of.setdefault(image_id, i)
                if owner != i:
                    reject(i, "duplicate_id", f"image_id {image_id!r} already used by the record at {keys[owner]}")
        # Against references first: a pair that copies an evaluation image or one kept before
        # goes, whatever copies of it this run holds.
        if self.eval_sets:
            self._against_reference(image, alive, cols, decisions, reject, self.eval_sets, "eval")
        if self.against:
            self._against_reference(image, alive, cols, decisions, reject, self.against, "kept")

        def reject_groups(members: np.ndarray, labels: np.ndarray, reason: str) -> None:
            # Sort each group by most pixels, then input order: the first one is kept.
            order = np.lexsort((members, -pixels[members], labels))
            keeper = None
            for pos in range(len(order)):
                idx, label = int(members[order[pos]]), labels[order[pos]]
                if pos == 0 or label != labels[order[pos - 1]]:
                    keeper = idx
                else:
                    reject(idx, reason, f"duplicate of {ids[keeper]!r}")

        if self.exact_image:
            sha = image["sha"]
            members = np.flatnonzero(alive & (sha != 0))
            reject_groups(members, sha[members], "exact_image")
        if self.near_image:
            members = np.flatnonzero(alive & image["has_phash"])
            links = self._near_image_links(members, image, cols)
            reject_groups(members, components(len(members), links), "near_image")
        if self.exact_text or self.near_text:
            self._text_groups(cols, alive, decisions)
        return decisions

    def _near_image_links(self, members: np.ndarray, image: dict[str, np.ndarray], cols: _Columns) -> np.ndarray:
        """Pairs of positions in ``members`` whose images are near copies."""
        phash, mirror, has_mirror = image["phash"][members], image["mirror"][members], image["has_mirror"][members]
        # Each record stands in the search with its hash and its mirror's: a left-right
        # flipped copy's hash is near the original's mirror hash (and the other way round).
        # With their windows' hashes too: a copy cropped a little, or given a border, is near
        # one of the original's windows (or the original near one of the copy's).
        windows, n_windows = cols.column("windows")[members], cols.column("n_windows")[members]
        in_window = np.arange(WINDOWS)[None, :] < n_windows[:, None]
        local = np.arange(len(members))
        owners = np.concatenate([local, local[has_mirror], np.broadcast_to(local[:, None], windows.shape)[in_window]])
        pool = np.concatenate([phash, mirror[has_mirror], windows[in_window]])
        hot = HotBuckets()
        found = near_hash_pairs(pool, self.phash_radius, self.hot_bucket, hot)
        for name, value in hot.as_stats("near_image").items():
            self.stat(name, value)
        # A window stands for a copy against a whole image (or its mirror), never against
        # another window: two textures (brick, grass) share windows without being copies.
        whole = len(local) + int(has_mirror.sum())
        found = found[(found[:, 0] < whole) | (found[:, 1] < whole)]
        # and, being a guess at a crop, it must come closer than a whole image does
        by_window = (found[:, 0] >= whole) | (found[:, 1] >= whole)
        close = np.bitwise_count(pool[found[:, 0]] ^ pool[found[:, 1]]) <= self.window_radius
        found = found[~by_window | close]
        links = owners[found]
        return links[links[:, 0] != links[:, 1]]

    def _against_reference(self, image: dict[str, np.ndarray], alive: np.ndarray, cols: _Columns, decisions: dict[str, Decision],
                           reject: Any, paths: list[str], kind: str) -> None:
        """Reject (or, for evaluation sets with ``eval_action: flag``, flag) each live record whose
        image is an exact or near copy of one in the references, naming the one it copies."""
        from recaption.dedup.index import ReferenceIndexError, load_references  # noqa: PLC0415 - pyarrow, only when used

        try:
            ref = load_references(paths, kind)
        except ReferenceIndexError as exc:
            raise StageError(f"dedup.{'eval_sets' if kind == 'eval' else 'against'}: {exc}") from exc
        reason = "contaminates_eval" if kind == "eval" else "seen_before"
        members = np.flatnonzero(alive)
        match, how, distance = _reference_matches(image, members, ref, self.phash_radius if self.near_image else 0,
                                                  self.hot_bucket, self.stat, reason)
        found = np.flatnonzero(match >= 0)
        self.stat(reason, len(found))
        flag = kind == "eval" and self.eval_action == "flag"
        rows: list[list[Any]] = []
        for pos in found:
            i, row = int(members[pos]), int(match[pos])
            source, ref_id = ref.name(row)
            what = f"{how[pos]} of {ref_id!r} in {source}" + (f" ({distance[pos]} bits)" if how[pos] != "exact copy" else "")
            if len(rows) < self.FINDINGS:
                rows.append([cols.ids[i], source, ref_id, str(how[pos]), int(distance[pos])])
            if flag:
                decisions[cols.keys[i]] = Decision(meta={"contaminates_eval": f"{source}:{ref_id}"})
            else:
                reject(i, reason, what)
        indexed = ", ".join(f"{s['name']} ({s['records']} images)" for s in ref.sources)
        self.findings[reason] = {
            "title": "Copies of evaluation images" if kind == "eval" else "Already kept by earlier runs",
            "summary": f"{len(found)} pair(s) {'flagged (meta.contaminates_eval)' if flag else f'rejected as dedup/{reason}'}, "
                       f"checked against {indexed}" + (f"; the first {self.FINDINGS} listed" if len(found) > self.FINDINGS else ""),
            "count": len(found), "columns": ["id", "source", "copies", "how", "bits"], "rows": rows,
        }

    def _text_groups(self, cols: _Columns, alive: np.ndarray, decisions: dict[str, Decision]) -> None:
        text = cols.column("text")
        members = np.flatnonzero(alive & (text != 0))
        local = np.arange(len(members))
        links = [np.empty((0, 2), np.int64)]
        if self.exact_text:
            links.append(runs_of_equal(text[members], local))
        if self.near_text:
            minhash = cols.column("minhash")[members]
            candidates = np.concatenate(
                [runs_of_equal(self.minhasher.band_hash(minhash, b), local) for b in range(self.minhasher.bands)]
            )
            if len(candidates):
                candidates = np.unique(np.sort(candidates, axis=1), axis=0)
                # Estimated Jaccard: the share of MinHash values two texts agree on. In chunks:
                # a million candidate pairs would otherwise gather 2 x 256 MB of rows at once.
                for start in range(0, len(candidates), self.AGREEMENT_CHUNK):
                    chunk = candidates[start : start + self.AGREEMENT_CHUNK]
                    agree = (minhash[chunk[:, 0]] == minhash[chunk[:, 1]]).mean(axis=1)
                    links.append(chunk[agree >= self.text_jaccard])
        labels = components(len(members), np.concatenate(links))
        shared = np.flatnonzero(np.bincount(labels, minlength=len(members))[labels] > 1)
        groups: dict[int, list[int]] = {}  # only captions that are shared: most are not
        for pos in shared:
            groups.setdefault(int(labels[pos]), []).append(int(members[pos]))
        for group in groups.values():
            if len(group) < 2:
                continue
            first = group[0]  # members are in input order
            for i in group:
                d = Decision(scores={"text_dup_count": len(group)})
                if i != first:
                    d.meta["text_dup_of"] = cols.ids[first]
                    if self.text_action == "reject":
                        d.reject = ("duplicate_text", f"same caption as {cols.ids[first]!r}")
                decisions[cols.keys[i]] = d


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

    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Decision]:
        from recaption.dedup.semantic import decode_vector, semantic_duplicates  # noqa: PLC0415

        keys: list[str] = []
        ids: list[str] = []
        rows: list[np.ndarray] = []
        scores: list[float] = []
        missing = 0
        for key, sig in signatures:
            vector = None
            if isinstance(sig.get("emb"), str):
                try:
                    vector = decode_vector(sig["emb"])
                except ValueError:
                    vector = None
            if vector is None or (rows and len(vector) != len(rows[0])):
                missing += 1  # not compared: nothing to compare it by
                continue
            keys.append(key)
            ids.append(sig["id"])
            rows.append(vector)
            scores.append(sig.get("score") if sig.get("score") is not None else -np.inf)
        if missing:
            self.stat("no_embedding", missing)
        self.findings = {}
        if not rows:
            return {}
        x = np.stack(rows).astype(np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        x = x.astype(np.float16)  # half the memory; each cluster is compared in float32
        k = self.clusters if self.clusters != "auto" else -(-len(x) // 1000)
        rank: str | np.ndarray = np.asarray(scores) if self.keep.startswith("score:") else self.keep
        found = semantic_duplicates(x, int(k), rank, self.max_cluster, self.seed)
        for name, value in (("clusters", found.clusters), ("clusters_split", found.split), ("clusters_windowed", found.windowed)):
            if value:
                self.stat(name, value)
        dup = np.flatnonzero(found.best >= self.threshold)
        self.stat("semantic_duplicates", len(dup))
        decisions: dict[str, Decision] = {}
        listed: list[list[Any]] = []
        for i in dup:
            similar, cosine = ids[int(found.of[i])], float(found.best[i])
            decision = Decision(scores={"semantic_dup_similarity": round(cosine, 4)}, meta={"semantic_dup_of": similar})
            if self.action == "reject":
                decision.reject = ("semantic_duplicate", f"means the same as {similar!r} (cosine {cosine:.3f})")
            decisions[keys[i]] = decision
            if len(listed) < self.LISTED:
                listed.append([ids[i], similar, round(cosine, 3)])
        n = len(x)
        self.findings["what_if"] = {
            "title": "Semantic duplicates: what-if",
            "summary": f"{len(dup)} of {n} embedded pairs {'rejected' if self.action == 'reject' else 'flagged'} at cosine "
                       f"similarity >= {self.threshold} ({found.clusters} clusters, keep {self.keep})"
                       + (f"; {missing} pairs had no embedding" if missing else ""),
            "columns": ["threshold", "pairs removed", "share"],
            "rows": [[t, int((found.best >= t).sum()), f"{100 * (found.best >= t).mean():.1f} %"] for t in self.what_if],
        }
        self.findings["examples"] = {
            "title": "Semantic duplicates: examples", "summary": f"the first {len(listed)} of {len(dup)}",
            "columns": ["id", "means the same as", "cosine"], "rows": listed,
        }
        return decisions

    def apply(self, batch: list[Pair], keys: list[str], decisions: dict[str, Decision]) -> list[Pair]:
        out = super().apply(batch, keys, decisions)
        if not self.keep_embedding:  # 1.4 KB of base64 per pair: training data does not need it
            for pair in batch:
                pair.scores.pop("image_embedding", None)
        return out
