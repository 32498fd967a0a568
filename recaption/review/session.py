"""A review session: the pairs to review, what the page shows of each, which image file it may
serve, and the export of decisions back onto the pairs.

- The round: ``round`` or, by default, one more than the highest round of the human captions
  already on the pairs (round n's decisions, exported, are round n+1's input).
- What a pair shows: the original alt-text, the previous round's caption (the latest human
  caption, else the selected caption) and the candidates (one per caption source, with
  scores).
- ``cross_check``: a reviewer gets only pairs that another reviewer decided in the previous
  round (the paper's two-vendor cross-check).
- Images are served by their position in the dataset, never by a path the browser names, and
  only from inside the image roots (``image_root``; by default those a sample recorded, else
  the dataset's folder and, for a run's output, its input's folder): a record whose path
  leads elsewhere shows no image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recaption.eval.sources import current_captions
from recaption.imaging import is_url
from recaption.io import read_kept_pairs
from recaption.io.base import ReaderOptions
from recaption.limits import MAX_TEXT_CHARS
from recaption.record import Caption, Pair
from recaption.review.images import real_image, recorded_roots, sniff_type
from recaption.review.store import Decision, DecisionStore

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp"}


def default_store(dataset: Path) -> Path:
    return dataset / "review.sqlite" if dataset.is_dir() else dataset.with_name(dataset.name + ".review.sqlite")


def human_captions(pair: Pair) -> list[tuple[int, Caption]]:
    return [(i, c) for i, c in enumerate(pair.captions) if c.source == "human"]


def evidence(pair: Pair) -> dict[str, Any]:
    """What the taggers stored that a reviewer checks a caption against: the classifier's labels
    with their probabilities, the OCR text, the NSFW score and faces, the image's size."""
    def entries(tagger: str) -> list[dict[str, Any]]:  # a dataset's meta is input like any other: only what has the shape
        try:
            found = pair.tags(tagger)
        except AttributeError:
            return []
        return [t for t in found if isinstance(t, dict)][:20] if isinstance(found, list) else []

    def number(v: Any) -> float | None:
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    size = [pair.scores.get("width"), pair.scores.get("height")]
    return {
        "size": size if all(isinstance(v, int) and not isinstance(v, bool) for v in size) else None,
        "labels": [{"label": str(t.get("label", ""))[:100], "p": number(t.get("p"))} for t in entries("classify")][:10],
        "ocr": [str(t.get("text", ""))[:200] for t in entries("ocr")],
        "nsfw": number(pair.scores.get("nsfw")), "faces": number(pair.scores.get("faces")),
    }


@dataclass
class ReviewSession:
    dataset: Path
    pairs: list[Pair]
    store: DecisionStore
    round: int
    image_roots: list[Path]
    cross_check: bool = False
    refused_roots: list[Path] = field(default_factory=list)  # recorded outside the dataset: not served

    @classmethod
    def open(cls, dataset: str | Path, store: str | Path | None = None, round_: int | None = None, image_root: str | Path | None = None,
             cross_check: bool = False, fmt: str | None = None) -> ReviewSession:

        path = Path(dataset).resolve()
        pairs, _ = read_kept_pairs(path, fmt, ReaderOptions())
        done = [c.round for p in pairs for _, c in human_captions(p)]
        refused: list[Path] = []
        if image_root:
            roots = [Path(r).resolve() for r in ([image_root] if isinstance(image_root, (str, Path)) else image_root)]
        else:
            roots, refused = recorded_roots(path)
        session = cls(path, pairs, DecisionStore(store or default_store(path)), round_ or (max(done) + 1 if done else 1), roots, cross_check)
        session.refused_roots = refused
        return session

    # --- what the page shows -----------------------------------------------------------------

    def previous(self, pair: Pair) -> tuple[int | None, str]:
        earlier = [(i, c) for i, c in human_captions(pair) if c.round < self.round]
        if earlier:
            i, c = max(earlier, key=lambda ic: (ic[1].round, ic[0]))
            return i, c.text
        selected = next(((i, c) for i, c in enumerate(pair.captions) if c.selected), None)
        return (selected[0], selected[1].text) if selected else (None, pair.texts[0] if pair.texts else "")

    def assigned(self, reviewer: str) -> list[int]:
        """Positions of the pairs this reviewer reviews in this round."""
        if not self.cross_check:
            return list(range(len(self.pairs)))
        out = []
        for k, pair in enumerate(self.pairs):
            last = [c for _, c in human_captions(pair) if c.round == self.round - 1]
            if last and all(c.params.get("reviewer") != reviewer for c in last):
                out.append(k)
        return out

    def item(self, k: int) -> dict[str, Any]:
        pair = self.pairs[k]
        previous_index, previous_text = self.previous(pair)
        candidates = [
            {"index": i, "source": key, "text": c.text, "scores": {n: round(v, 3) for n, v in c.scores.items() if isinstance(v, (int, float))}}
            for key, (i, c) in current_captions(pair).items()
        ]
        return {
            "position": k, "image_id": pair.image_id, "alt_text": pair.texts[0] if pair.texts else "",
            "alt_texts": list(pair.texts),  # every original text: the page shows the others below the first
            "previous": {"index": previous_index, "text": previous_text}, "candidates": candidates,
            "has_image": self.has_image(k), "evidence": evidence(pair),
        }

    def progress(self, reviewer: str) -> tuple[list[int], dict[str, Decision], int]:
        """This reviewer's positions, their decisions by image id, and how many pairs are decided."""
        positions = self.assigned(reviewer)
        decisions = {image_id: d for (image_id, _), d in self.store.current(self.round, reviewer).items()}
        ids = {self.pairs[k].image_id for k in positions}
        return positions, decisions, sum(1 for i in decisions if i in ids)

    def state(self, reviewer: str) -> dict[str, Any]:
        positions, decisions, decided = self.progress(reviewer)
        return {
            "reviewer": reviewer, "round": self.round, "cross_check": self.cross_check,
            "total": len(positions), "decided": decided,
            "items": [self.item(k) for k in positions], "decisions": {i: d.__dict__ for i, d in decisions.items()},
        }

    def decide(self, reviewer: str, body: dict[str, Any]) -> Decision:
        image_id = body.get("image_id")
        pair = next((p for p in self.pairs if p.image_id == image_id), None)
        if pair is None:
            raise ValueError("no such pair in this dataset")
        index = body.get("caption_index")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(pair.captions)):
            raise ValueError(f"caption_index must be one of the pair's {len(pair.captions)} captions")
        text, reason = body.get("text") or "", body.get("reason") or ""
        if not isinstance(text, str) or not isinstance(reason, str) or len(text) > MAX_TEXT_CHARS or len(reason) > 2000:
            raise ValueError("text and reason are strings (a caption of at most 20,000 characters)")
        return self.store.add(str(image_id), reviewer, self.round, str(body.get("action", "")), index, text, reason)

    # --- images -------------------------------------------------------------------------------

    def image_source(self, k: int) -> Path | bytes | None:
        """Pair ``k``'s image as bytes, or its path where that is an image file inside the roots."""
        if not 0 <= k < len(self.pairs):
            return None
        image = self.pairs[k].image
        if isinstance(image, (bytes, bytearray)):
            return bytes(image)
        if not isinstance(image, str) or is_url(image):
            return None  # remote images are not fetched by the review server
        path = Path(image).resolve()
        if IMAGE_TYPES.get(path.suffix.lower()) is None or not any(root in path.parents for root in self.image_roots):
            return None
        return path if path.is_file() else None

    def has_image(self, k: int) -> bool:
        return self.image_source(k) is not None

    def image_bytes(self, k: int) -> tuple[bytes, str] | None:
        """The image of pair ``k`` (its bytes, or a file inside the image roots) and its type;
        None for anything that is not an image by its bytes."""
        path = self.image_source(k)
        if path is None:
            return None
        if isinstance(path, bytes):
            kind = sniff_type(path[:16])
            return (path, kind) if kind else None
        return real_image(path)
