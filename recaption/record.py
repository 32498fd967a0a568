"""The data model: one Pair per image, every caption ever made for it, and why it was rejected.

Records are plain dataclasses so that they pickle cheaply between worker processes and
serialise to JSON without a schema library. ``Pair.to_dict`` / ``Pair.from_dict`` are the
one place where the on-disk shape is decided; every reader and writer goes through them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reject:
    stage: str
    reason: str
    detail: str = ""

    @property
    def key(self) -> str:
        """The ``stage/reason`` key used in stats and the report."""
        return f"{self.stage}/{self.reason}"


@dataclass
class Caption:
    text: str
    source: str  # "alt-text" | "rules" | "vlm:<model>" | "altogether:<ckpt>" | "human"
    round: int = 0
    parent: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    model_hash: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    selected: bool = False

    def edited(self, text: str, parent: int, scores: dict[str, float], **params: Any) -> Caption:
        """A corrected version of this caption (same source and round), which takes over its
        selection; this one stays, unselected, for audit. ``params`` record the edit."""
        child = Caption(text, self.source, self.round, parent, {**self.params, **params}, self.model_hash, scores, self.selected)
        self.selected = False
        return child


@dataclass
class Pair:
    image_id: str
    # A path (relative to the reader's image root, or absolute), a URL, or the encoded bytes.
    image: str | bytes | None
    texts: list[str] = field(default_factory=list)
    captions: list[Caption] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    reject: Reject | None = None
    # Where the record came from (file, line or tar member). Kept so that a rejected record
    # whose image lived inside a shard can still be found; never used for decisions.
    origin: dict[str, Any] = field(default_factory=dict)
    # Image file extension when ``image`` is bytes ("jpg", "png", ...).
    image_ext: str | None = None
    # The members of a WebDataset sample that no stage reads (``cls``, ``npy``, ``seg.png``, a
    # second image), by extension: carried, untouched, to the outputs that can hold bytes.
    extras: dict[str, bytes] = field(default_factory=dict)

    # -- convenience ---------------------------------------------------------------------
    def reject_with(self, stage: str, reason: str, detail: str = "") -> None:
        if self.reject is None:  # the first reason wins; later stages never see the record
            self.reject = Reject(stage, reason, detail)

    @property
    def alt_text(self) -> str:
        """The original alt-text, as it came in (never rewritten)."""
        return self.texts[0] if self.texts else ""

    # -- captions ------------------------------------------------------------------------
    def cleaned_alt_index(self) -> int | None:
        """Index of the first alt-text caption (the alt-text as the text stages took it in)."""
        return next((i for i, c in enumerate(self.captions) if c.source == "alt-text"), None)

    def selected_alt_index(self) -> int | None:
        """Index of the selected alt-text caption: what a caption writer re-aligns or edits, or
        None where no alt-text is selected (it cleaned to nothing, or said only context)."""
        return next((i for i, c in enumerate(self.captions) if c.selected and c.source == "alt-text"), None)

    def selected_index(self) -> int | None:
        return next((i for i, c in enumerate(self.captions) if c.selected), None)

    def selected(self) -> Caption | None:
        """The caption training uses, or None where none is selected."""
        i = self.selected_index()
        return self.captions[i] if i is not None else None

    def select(self, index: int | None) -> None:
        """Make caption ``index`` the selected one (None: none), every other unselected."""
        for i, cap in enumerate(self.captions):
            cap.selected = i == index

    # -- what stages derived, and with which model ----------------------------------------
    # Stored in ``meta`` (``tags``, ``scored_by``) so that every format carries them; stages and
    # readers go through these accessors, never through the dicts.
    def set_tags(self, tagger: str, model_hash: str, value: Any) -> None:
        """What tagger ``tagger`` (a stage name) saw, with the hash of the model that saw it."""
        self.meta.setdefault("tags", {})[tagger] = {"model": model_hash, "value": value}

    def tags(self, tagger: str) -> Any:
        """What ``tagger`` stored, or [] where it did not run."""
        found = (self.meta.get("tags") or {}).get(tagger)
        return (found.get("value") if isinstance(found, dict) else None) or []

    def tag_models(self) -> list[str]:
        """The hashes of every model whose tags the pair holds."""
        return sorted({v["model"] for v in (self.meta.get("tags") or {}).values() if isinstance(v, dict) and "model" in v})

    def scored_by(self, scorer: str) -> dict[str, Any]:
        """What made the scores ``scorer`` stored (model hash, scale), or {}."""
        return (self.meta.get("scored_by") or {}).get(scorer) or {}

    def set_scored_by(self, scorer: str, provenance: dict[str, Any]) -> None:
        self.meta.setdefault("scored_by", {})[scorer] = provenance

    def current(self) -> list[int]:
        """Indices of the captions no edit has replaced (an edit is a child of the same source)."""
        caps = self.captions
        replaced = {c.parent for c in caps if c.parent is not None and 0 <= c.parent < len(caps) and caps[c.parent].source == c.source}
        return [i for i in range(len(caps)) if i not in replaced]

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self, include_image_bytes: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"image_id": self.image_id}
        if isinstance(self.image, (bytes, bytearray)):
            if include_image_bytes:
                out["image"] = bytes(self.image)
        else:
            out["image"] = self.image
        out["texts"] = list(self.texts)
        # Not dataclasses.asdict: its recursive deep copy is the slowest part of writing a record.
        out["captions"] = [
            {**vars(c), "params": dict(c.params), "scores": dict(c.scores)} for c in self.captions
        ]
        out["scores"] = dict(self.scores)
        out["meta"] = dict(self.meta)
        out["reject"] = dataclasses.asdict(self.reject) if self.reject else None
        out["origin"] = dict(self.origin)
        if self.image_ext:
            out["image_ext"] = self.image_ext
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        rej = d.get("reject")
        return cls(
            image_id=str(d["image_id"]),
            image=d.get("image"),
            texts=list(d.get("texts") or []),
            captions=[Caption(**c) for c in d.get("captions") or []],
            scores=dict(d.get("scores") or {}),
            meta=dict(d.get("meta") or {}),
            reject=Reject(**rej) if rej else None,
            origin=dict(d.get("origin") or {}),
            image_ext=d.get("image_ext"),
        )
