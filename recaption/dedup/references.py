"""Copies of reference images: which records copy an image of the evaluation sets or of what
earlier runs kept (an exact copy by sha256, a near copy or a mirror image by perceptual hash).

``References`` names the sources (index files, run folders, datasets) and how near counts;
``indexed`` hashes every source that is not an index file once, on the driver, so that the map
tasks read an index instead of each hashing the source again; ``hits`` finds, for a batch of
signatures, the records that copy a reference image, as ``RefHit`` facts (which source, which
image, how, how many bits): the dedup stage words them as rejects and findings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recaption.dedup.hashes import HotBuckets, nearest_in
from recaption.dedup.index import ReferenceIndexError, cached_references, index_source, is_index_file
from recaption.io.signatures import order_of

KIND_REASON = {"eval": "contaminates_eval", "kept": "seen_before"}  # a reference's kind, and the reason its copies go as
KIND_OPTION = {"eval": "eval_sets", "kept": "against"}  # the dedup option that names each kind's sources


@dataclass
class RefHit:
    """A record that copies a reference image."""

    reason: str  # contaminates_eval or seen_before
    record_id: str
    source: str  # the reference source's name
    ref_id: str  # the image it copies there
    how: str  # "exact copy", "near copy" or "mirror image"
    distance: int  # bits between the perceptual hashes (0 for an exact copy)
    flag: bool = False  # kept and flagged instead of rejected

    @property
    def row(self) -> list[Any]:
        """The findings table's row: id, source, copies, how, bits."""
        return [self.record_id, self.source, self.ref_id, self.how, self.distance]


@dataclass
class ReferenceHits:
    """One kind of reference's hits (by record order), and what was checked against, for the report."""

    checked: str
    hits: dict[int, RefHit] = field(default_factory=dict)


@dataclass(frozen=True)
class References:
    eval_sets: tuple[str, ...] = ()
    against: tuple[str, ...] = ()
    flag_eval: bool = False  # copies of evaluation images are kept and flagged, not rejected
    radius: int = 4  # 0: exact perceptual hashes only
    hot_bucket: int = 512

    def sources(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(kind, paths) for kind, paths in (("eval", self.eval_sets), ("kept", self.against)) if paths]

    def indexed(self, folder: Path) -> References:
        """These references with every source that is not an index file (a run folder, a
        dataset) indexed once, here, into ``folder``. The index keeps the source's name, so hits
        read the same; a source that holds nothing is left as it is, for the task to say so.
        A source that cannot be indexed raises ``ReferenceIndexError`` naming its option."""
        out = copy.copy(self)
        for kind in ("eval", "kept"):
            option = KIND_OPTION[kind]
            paths = []
            for i, path in enumerate(getattr(self, option)):
                if is_index_file(path):
                    paths.append(path)
                    continue
                try:
                    index = index_source(path, kind=kind)
                except ReferenceIndexError as exc:
                    raise ReferenceIndexError(f"{option}: {exc}") from exc
                if not len(index):
                    paths.append(path)
                    continue
                folder.mkdir(parents=True, exist_ok=True)
                index.save(folder / f"{option}-{i}.parquet")
                paths.append(str(folder / f"{option}-{i}.parquet"))
            object.__setattr__(out, option, tuple(paths))
        return out

    def hits(self, image: dict[str, np.ndarray], keys: list[str], ids: list[str], hot: dict[str, HotBuckets]) -> dict[str, ReferenceHits]:
        """Each record that copies an image of the evaluation sets or of earlier runs, by kind.
        ``image``: the records' sha, phash, has_phash, mirror and has_mirror columns; ``hot``:
        the hot-bucket counts by reason."""
        found_by_kind: dict[str, ReferenceHits] = {}
        for kind, paths in self.sources():
            try:
                ref = cached_references(paths, kind)
            except ReferenceIndexError as exc:
                raise ReferenceIndexError(f"{KIND_OPTION[kind]}: {exc}") from exc
            reason = KIND_REASON[kind]
            match, how, distance = _reference_matches(image, ref, self.radius, self.hot_bucket, hot[reason])
            found = found_by_kind[kind] = ReferenceHits(", ".join(f"{s['name']} ({s['records']} images)" for s in ref.sources))
            for pos in np.flatnonzero(match >= 0):
                source, ref_id = ref.name(int(match[pos]))
                found.hits[order_of(keys[pos])] = RefHit(reason, ids[pos], source, ref_id, str(how[pos]), int(distance[pos]),
                                                         flag=kind == "eval" and self.flag_eval)
        return found_by_kind


def _reference_matches(image: dict[str, np.ndarray], ref: Any, radius: int, hot_bucket: int,
                       hot: HotBuckets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each record: the reference row it copies (-1: none), how ("exact copy", "near copy",
    "mirror image") and the distance in bits: an exact sha256 first, else the nearest of its hash
    and its mirror's to a reference hash."""
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
