"""What each shard keeps for the report: histograms, a gallery sample, reject examples.

Collected in the worker while the shard's records are at hand, stored with the shard's
done marker, and merged at the end, so the report needs no second pass over the data and
is rebuilt for free on resume. The gallery is the records with the smallest hash of their
id: a uniform sample that is the same whichever worker saw which shard.
"""

from __future__ import annotations

import base64
import heapq
import io
import math
import warnings
import zlib
from collections import Counter
from typing import Any

from PIL import Image

from recaption.imaging import ImageFileError, is_url, read_image_file
from recaption.io.base import READ_STAGE
from recaption.limits import MAX_IMAGE_BYTES
from recaption.record import Pair
from recaption.text.clean import says_nothing

THUMB_SIDE = 160
# Scores in [0, 1] that filters threshold: the report shows what each threshold would keep.
WHAT_IF_SCORES = ("nsfw", "text_area_share", "imagenet_top1_p", "tag_agreement", "candidate_diversity")
WHAT_IF_BINS = 20
MAX_THUMB_SOURCE_PIXELS = 50_000_000
SHOWN_CHARS = 400  # of any one text in the report


def thumbnail_b64(image: str | bytes | None) -> str | None:
    if not image or (isinstance(image, str) and is_url(image)):
        return None
    try:
        # A path is read as image_check reads it: a FIFO or a device would never end.
        src = io.BytesIO(image if isinstance(image, (bytes, bytearray)) else read_image_file(image, MAX_IMAGE_BYTES))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(src) as img:
                if img.width * img.height > MAX_THUMB_SOURCE_PIXELS:
                    return None  # a rejected decompression bomb must not be decoded for its picture
                img.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # JPEG: decode at the smallest scale that is big enough
                img.thumbnail((THUMB_SIDE, THUMB_SIDE))
                buf = io.BytesIO()
                img.convert("RGB").save(buf, "JPEG", quality=70)
        return base64.b64encode(buf.getvalue()).decode("ascii")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, ImageFileError):  # a broken image simply has none
        return None


def _sample_rank(image_id: str) -> int:
    return zlib.crc32(image_id.encode("utf-8"))


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """A text as the report shows it: whole up to ``limit`` characters, then cut with an ellipsis
    (the report embeds a few hundred records; their texts must not make it unbounded)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


SHOWN_SCORES = 12  # numeric scores a report card carries (for the gallery's filters and sorts)


def _numeric_scores(pair: Pair, selected: Any) -> dict[str, int | float]:
    """The pair's numeric scores and its selected caption's (prefixed ``caption.``), rounded."""
    out: dict[str, int | float] = {}
    for prefix, scores in (("", pair.scores), ("caption.", selected.scores if selected else {})):
        for key, value in scores.items():
            if len(out) >= SHOWN_SCORES or isinstance(value, bool):
                continue
            if isinstance(value, int) and abs(value) < 2**53:  # a whole number a browser holds exactly
                out[prefix + str(key)[:40]] = value
            elif isinstance(value, float) and math.isfinite(value):
                out[prefix + str(key)[:40]] = round(value, 4)
    return out


def _origin(pair: Pair) -> str:
    """Where the record came from: "file line N" / "file row N" (for the report's links)."""
    o = pair.origin or {}
    where = next((f"{k} {o[k]}" for k in ("line", "row") if k in o), "")
    return shown(f"{o.get('file', '')} {where}".strip(), 300)


def _pair_view(pair: Pair) -> dict[str, Any]:
    first = pair.cleaned_alt_index()
    original = pair.captions[first] if first is not None else None
    selected = pair.selected()
    return {
        "source": selected.source if selected else "",
        "scores": _numeric_scores(pair, selected),
        "origin": _origin(pair),
        "origin_file": shown(str((pair.origin or {}).get("file", "")), 300),
        "image_id": shown(pair.image_id, 120),
        "texts": [shown(t) for t in pair.texts[:3]],
        "cleaned": shown(original.text) if original else "",
        "cleaned_by": original.params.get("cleaned_by", []) if original else [],
        "caption": shown(selected.text) if selected else "",
        "tokens": selected.scores.get("clip_tokens") if selected else None,
        "fitted": bool(selected and "fit_to_tokens" in selected.params),
        "size": [pair.scores.get("width"), pair.scores.get("height")],
        "text_dup_count": pair.scores.get("text_dup_count"),
        "tags": [t["label"] for t in pair.tags("classify")][:3],
        "ocr": [shown(t["text"], 120) for t in pair.tags("ocr")][:4],
        "nsfw": pair.scores.get("nsfw"),
    }


class ReportSampler:
    def __init__(self, gallery: int = 48, examples_per_reason: int = 3) -> None:
        self.gallery_size = gallery
        self.examples_per_reason = examples_per_reason
        self.gallery: list[tuple[int, Pair]] = []
        self.examples: dict[str, list[dict[str, Any]]] = {}
        self.tokens_before: Counter[int] = Counter()
        self.tokens_after: Counter[int] = Counter()
        self.widths: Counter[int] = Counter()
        self.heights: Counter[int] = Counter()
        self.rules: Counter[str] = Counter()
        self.quality: Counter[str] = Counter()
        self.groups: dict[str, list[dict[str, Any]]] = {}  # records a stage marked for the report, by group
        self.score_bins: dict[str, Counter[int]] = {key: Counter() for key in WHAT_IF_SCORES}

    def _observe_scores(self, pair: Pair) -> None:
        # Rejected pairs count too: a filter's what-if needs the scores of what it removed.
        for key in WHAT_IF_SCORES:
            value = pair.scores.get(key)
            if isinstance(value, (int, float)):
                self.score_bins[key][min(int(value * WHAT_IF_BINS), WHAT_IF_BINS - 1)] += 1

    def kept(self, pair: Pair) -> None:
        self._observe_scores(pair)
        i = pair.cleaned_alt_index()
        first = pair.captions[i] if i is not None else None
        if first is not None and "clip_tokens" in first.scores:
            self.tokens_before[int(first.scores["clip_tokens"])] += 1
        selected = pair.selected()
        if selected is not None and "clip_tokens" in selected.scores:
            self.tokens_after[int(selected.scores["clip_tokens"])] += 1
        for cap in pair.captions:
            if cap.parent is None:
                self.rules.update(cap.params.get("cleaned_by", []))
        self._observe_caption(pair, selected)
        w, h = pair.scores.get("width"), pair.scores.get("height")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 2**31 for v in (w, h)):  # NaN fails 0 < v
            self.widths[int(w)] += 1
            self.heights[int(h)] += 1
        rank = _sample_rank(pair.image_id)
        if len(self.gallery) < self.gallery_size or rank < self.gallery[-1][0]:
            self.gallery.append((rank, pair))
            self.gallery.sort(key=lambda item: item[0])
            del self.gallery[self.gallery_size :]

    def _observe_caption(self, pair: Pair, selected: Any) -> None:
        """Counts for the caption-quality figures a run can give without references."""

        q = self.quality
        q["pairs"] += 1
        if selected is None:
            q["no_caption"] += 1
            return
        q[f"source:{selected.source.split(':')[0]}"] += 1
        if selected.text != (pair.texts[0] if pair.texts else ""):
            q["changed"] += 1
        if selected.params.get("hedged"):
            q["hedged"] += 1
        if "fit_to_tokens" in selected.params:
            q["fitted"] += 1
        if says_nothing(selected.text):
            q["content_free"] += 1

    def marked(self, pair: Pair, mark: dict[str, Any]) -> None:
        """A record a global stage marked for the report (a member of a duplicate cluster): its
        card, with what the mark says; the stage bounds how many it marks."""
        view = _pair_view(pair)
        view.update(thumb=thumbnail_b64(pair.image), detail=shown(pair.reject.detail) if pair.reject else "",
                    **{k: v for k, v in mark.items() if k != "cluster"})
        self.groups.setdefault(str(mark.get("cluster", "")), []).append(view)

    def rejected(self, pair: Pair) -> None:
        assert pair.reject is not None
        self._observe_scores(pair)
        bucket = self.examples.setdefault(pair.reject.key, [])
        if len(bucket) < self.examples_per_reason:
            view = _pair_view(pair)
            # A record the reader rejected never had its image path checked against the input's
            # tree (io.input_tree): its path is never opened, not even for a picture (its bytes,
            # where it came with them, are the input's own).
            vetted = pair.reject.stage != READ_STAGE or isinstance(pair.image, (bytes, bytearray))
            view.update(detail=shown(pair.reject.detail), thumb=thumbnail_b64(pair.image) if vetted else None)
            bucket.append(view)

    def to_dict(self) -> dict[str, Any]:
        gallery = []
        for rank, pair in self.gallery:
            view = _pair_view(pair)
            view.update(rank=rank, thumb=thumbnail_b64(pair.image))
            gallery.append(view)
        return {
            "gallery": gallery,
            "examples": self.examples,
            "tokens_before": dict(self.tokens_before),
            "tokens_after": dict(self.tokens_after),
            "widths": dict(self.widths),
            "heights": dict(self.heights),
            "rules": dict(self.rules),
            "quality": dict(self.quality),
            "groups": self.groups,
            "score_bins": {key: dict(bins) for key, bins in self.score_bins.items() if bins},
        }


class SampleMerger:
    """The run's report sample, merged one shard's sample at a time: histograms add up, the
    gallery keeps the ``gallery`` smallest ranks (a heap), each reason its first examples.
    Memory is bounded by those sizes and the histograms' keys, whatever the number of shards."""

    HISTOGRAMS = ("tokens_before", "tokens_after", "widths", "heights", "rules", "quality")
    NAMED = ("rules", "quality")  # keyed by name, not by a number

    def __init__(self, gallery: int, examples_per_reason: int) -> None:
        self.gallery_size, self.examples_per_reason = gallery, examples_per_reason
        self.histograms: dict[str, Counter[Any]] = {key: Counter() for key in self.HISTOGRAMS}
        self.score_bins: dict[str, Counter[int]] = {}
        self.gallery: list[tuple[float, int, dict[str, Any]]] = []  # a max-heap by rank (negated)
        self.examples: dict[str, list[Any]] = {}
        self.groups: dict[str, list[Any]] = {}
        self._seen = 0

    def add(self, sample: dict[str, Any]) -> None:
        for key in self.HISTOGRAMS:
            self.histograms[key].update({(int(k) if key not in self.NAMED else k): v for k, v in sample.get(key, {}).items()})
        for key, bins in sample.get("score_bins", {}).items():
            self.score_bins.setdefault(key, Counter()).update({int(k): v for k, v in bins.items()})
        for item in sample.get("gallery", []):
            self._seen += 1  # ties in rank keep the earlier shard's item, as a stable sort would
            entry = (-item["rank"], -self._seen, item)
            if len(self.gallery) < self.gallery_size:
                heapq.heappush(self.gallery, entry)
            elif self.gallery_size and entry > self.gallery[0]:
                heapq.heapreplace(self.gallery, entry)
        for reason, items in sample.get("examples", {}).items():
            bucket = self.examples.setdefault(reason, [])
            bucket.extend(items[: max(0, self.examples_per_reason - len(bucket))])
        for group, members in sample.get("groups", {}).items():  # a cluster's members come from any shard
            self.groups.setdefault(group, []).extend(members)

    def result(self) -> dict[str, Any]:
        merged: dict[str, Any] = {key: dict(total) for key, total in self.histograms.items()}
        merged["score_bins"] = {key: dict(bins) for key, bins in self.score_bins.items()}
        merged["gallery"] = [item for _, _, item in sorted(self.gallery, key=lambda e: (-e[0], -e[1]))]
        merged["examples"] = self.examples
        merged["groups"] = self.groups
        return merged


def merge_samples(samples: Any, gallery: int, examples_per_reason: int) -> dict[str, Any]:
    """The report sample of many shards' samples (an iterable: read one at a time)."""
    merger = SampleMerger(gallery, examples_per_reason)
    for sample in samples:
        merger.add(sample)
    return merger.result()
