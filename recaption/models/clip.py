"""CLIP and SigLIP image-text similarity through transformers (``AutoModel`` / ``AutoProcessor``).

Images and texts are embedded separately and L2-normalised, so that image embeddings can be
cached and new captions scored against them later. A text longer than the text encoder's
budget (77 tokens for CLIP, 64 for SigLIP) is never truncated silently: it is split into
sentence chunks that fit (``recaption.text.fit.chunk_to_budget``) and its score is the mean
of its chunks' scores; the caller records that it was chunked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from recaption.models.hf import ModelLoadError, checkpoint_hash, load_pretrained, resolve_device, resolve_dtype
from recaption.text.fit import chunk_to_budget


def _features(output: Any) -> Any:
    # transformers 5 returns a model output whose pooler_output is the projected embedding;
    # older versions return the tensor itself.
    return output.pooler_output if hasattr(output, "pooler_output") else output


class ClipScorer:
    def __init__(self, model: str, device: str = "auto", dtype: str = "auto") -> None:
        import torch  # noqa: PLC0415 - heavy; imported when the stage is set up, in the worker
        from transformers import AutoModel, AutoProcessor  # noqa: PLC0415 - transformers, loaded only where it is used

        self.torch = torch
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        self.processor = load_pretrained(AutoProcessor, model, "CLIP processor")
        self.model = load_pretrained(AutoModel, model, "CLIP model", dtype=torch_dtype).to(self.device).eval()
        if not all(hasattr(self.model, f) for f in ("get_image_features", "get_text_features")):
            raise ModelLoadError(f"'{model}' is a {type(self.model).__name__}, not a CLIP-like model with image and text towers")
        config = self.model.config
        self.tokenizer = self.processor.tokenizer
        # SigLIP was trained on texts padded to a fixed length and scores differently without it.
        self.siglip = config.model_type.startswith("siglip")
        self.max_tokens = int(getattr(config.text_config, "max_position_embeddings", 77))
        image_processor = self.processor.image_processor
        preprocessing = {
            "image_processor": type(image_processor).__name__,
            "size": getattr(image_processor, "size", None),
            "crop": getattr(image_processor, "crop_size", None),
        }
        self.model_hash = checkpoint_hash(model, config, {"dtype": str(torch_dtype), **preprocessing})

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def _normalised(self, features: Any) -> np.ndarray:
        features = features.float()
        return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with self.torch.inference_mode():
            pixels = inputs["pixel_values"].to(self.model.dtype)
            return self._normalised(_features(self.model.get_image_features(pixel_values=pixels)))

    def embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        """One (chunks, dim) array per text: a single row unless the text was over budget."""
        chunks = [chunk_to_budget(text, self.count_tokens, self.max_tokens) for text in texts]
        flat = [c for cs in chunks for c in cs]
        padding = "max_length" if self.siglip else True
        # Chunks fit already; truncation only guards a single word longer than the budget.
        inputs = self.tokenizer(flat, return_tensors="pt", padding=padding, truncation=True, max_length=self.max_tokens)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with self.torch.inference_mode():
            embedded = self._normalised(_features(self.model.get_text_features(**inputs)))
        out, at = [], 0
        for cs in chunks:
            out.append(embedded[at : at + len(cs)])
            at += len(cs)
        return out
