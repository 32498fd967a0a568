"""What a CLIP-like model says about pairs: ``clip_score`` (CLIPScore / RefCLIPScore with any
CLIP or SigLIP) and ``image_embed`` (each image's embedding, for ``semantic_dedup``). Both take
image embeddings from the same side cache, so embedding after scoring with one model is free.

Scales (``scale``):

- ``100``: ``100 * max(cos, 0)``, the scale of torchmetrics and of the Altogether paper
  (alt-text 29.3, its re-aligned captions 33.3 with CLIP ViT-L/14);
- ``hessel``: ``2.5 * max(cos, 0)`` with the text prefixed "A photo depicts", as in Hessel
  et al.'s CLIPScore.

With references (``pair.meta["references"]``, a list of human captions), RefCLIPScore is
the harmonic mean of the caption's score and its best cosine with a reference (clipped at 0,
on the same scale). A caption over the text encoder's budget is scored over sentence chunks,
the mean of their scores, and ``scores.clip_chunks`` says into how many it was cut.

What made the scores is stored once per pair: ``meta.scored_by.clip_score = {model, scale}``;
re-running with the same model scores only new captions, with another model all of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recaption.dedup.semantic import encode_vector
from recaption.models.clip import ClipScorer
from recaption.models.embedding_cache import CachedImageEmbeddings, cache_folder_of
from recaption.models.hf import ModelLoadError
from recaption.record import Pair
from recaption.stages.base import (
    CAPTION_FACTS,
    CHECKED_IMAGES,
    HF_MODEL_NEEDS,
    MODEL_ON_GPU,
    Resources,
    Stage,
    StageError,
    model_on,
    register,
)

SCALES = {"100": (100.0, ""), "hessel": (2.5, "A photo depicts ")}
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def references_of(pair: Pair) -> list[str]:
    """Human reference captions for RefCLIPScore (``meta.references``), where a record has them."""
    return [r for r in pair.meta.get("references") or [] if isinstance(r, str)]


class _ClipModelStage(Stage):
    """A stage that holds a CLIP-like model and the cached image embeddings it makes."""

    resources = MODEL_ON_GPU
    requires = (CHECKED_IMAGES,)
    needs = HF_MODEL_NEEDS
    model_name: str
    device: str
    dtype: str
    cache_folder: Any

    def wants(self) -> Resources:
        return model_on(self.device)

    def setup(self) -> None:
        try:
            self.scorer = ClipScorer(self.model_name, self.device, self.dtype)
        except ModelLoadError as exc:
            raise StageError(f"{self.name}.model: {exc}") from exc
        self.images = CachedImageEmbeddings(self.scorer, self.cache_folder)
        self.cache, self.decode_side = self.images.cache, self.images.decode_side


@register
class ImageEmbed(_ClipModelStage):
    """Store each image's L2-normalised embedding (``scores.image_embedding``, float16 in base64)
    for ``semantic_dedup``, which removes it again unless told to keep it."""

    name = "image_embed"
    provides = ("score:image_embedding",)
    batch_size = 32

    def __init__(self, *, model: str = DEFAULT_CLIP, device: str = "auto", dtype: str = "auto", batch_size: int = 32, cache: str | None = "auto") -> None:
        super().__init__()
        if batch_size < 1:
            raise StageError("image_embed.batch_size must be at least 1")
        self.model_name, self.device, self.dtype, self.batch_size = model, device, dtype, batch_size
        self.cache_folder = cache_folder_of(cache)

    def process(self, batch: list[Pair]) -> None:
        pairs, vectors = self.images.of(batch, self.name)
        provenance = {"model": self.scorer.model_hash, "decode": f"min_side {self.decode_side}"}
        for pair, vector in zip(pairs, vectors):
            pair.scores["image_embedding"] = encode_vector(vector)
            pair.set_scored_by(self.name, provenance)


@register
class ClipScore(_ClipModelStage):
    """Score every caption against its image with a CLIP-like model; cache image embeddings."""

    name = "clip_score"
    provides = ("caption_score:clip_score", "caption_score:clip_chunks", "caption_score:refclip_score")
    requires = (CAPTION_FACTS, CHECKED_IMAGES)
    batch_size = 32

    def __init__(
        self,
        *,
        model: str = DEFAULT_CLIP,
        scale: str = "100",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        cache: str | None = "auto",
    ) -> None:
        super().__init__()
        if scale not in SCALES:
            raise StageError(f"clip_score.scale must be one of {sorted(SCALES)}")
        if batch_size < 1:
            raise StageError("clip_score.batch_size must be at least 1")
        self.model_name, self.scale, self.device, self.dtype = model, scale, device, dtype
        self.batch_size = batch_size
        self.cache_folder = cache_folder_of(cache)

    def process(self, batch: list[Pair]) -> None:
        weight, prefix = SCALES[self.scale]
        # JPEGs are decoded at the smallest DCT scale that still covers the model's input side.
        provenance = {"model": self.scorer.model_hash, "scale": self.scale, "decode": f"min_side {self.decode_side}"}
        todo = []
        for pair in batch:
            same = pair.scored_by(self.name) == provenance
            captions = [c for c in pair.captions if not (same and "clip_score" in c.scores)]
            if captions:
                todo.append((pair, captions))
        if not todo:
            return
        pairs, image_vectors = self.images.of([p for p, _ in todo], self.name)
        by_pair = {id(p): v for p, v in zip(pairs, image_vectors)}
        texts = [prefix + c.text for p, caps in todo if id(p) in by_pair for c in caps]
        refs = [prefix + r for p, _ in todo if id(p) in by_pair for r in references_of(p)]
        text_vectors = iter(self.scorer.embed_texts(texts)) if texts else iter(())
        ref_vectors = iter(self.scorer.embed_texts(refs)) if refs else iter(())
        for pair, captions in todo:
            if id(pair) not in by_pair:
                continue  # rejected as unreadable by decode_for_model
            image = by_pair[id(pair)]
            references = [next(ref_vectors) for _ in references_of(pair)]
            for cap in captions:
                chunks = next(text_vectors)
                cos = float(np.mean(chunks @ image))
                cap.scores["clip_score"] = round(weight * max(cos, 0.0), 4)
                cap.scores["clip_chunks"] = len(chunks)
                if references:
                    mean_caption = chunks.mean(axis=0)
                    best = max(float(np.mean(r @ mean_caption)) for r in references)
                    ref_term = weight * max(best, 0.0) if self.scale == "100" else max(best, 0.0)
                    clip_term = cap.scores["clip_score"]
                    total = clip_term + ref_term
                    cap.scores["refclip_score"] = round(2 * clip_term * ref_term / total, 4) if total > 0 else 0.0
            pair.set_scored_by(self.name, provenance)
