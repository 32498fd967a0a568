"""Concepts kept and concepts made up.

- Alt-text concept retention: of the alt-text's noun phrases (spaCy noun chunks, determiners
  dropped), the share whose words all appear in the caption ("a Bentley" is kept by "a red
  Bentley on a road", lost by "a car"). The mean over pairs whose alt-text has a noun phrase.
- Hallucination proxy (with a CLIP model): each noun phrase of the caption is scored on its
  own against the image ("a photo of {phrase}", ``100 * max(cos, 0)``); a phrase below
  ``threshold`` is counted as probably not in the image. The share of such phrases over all
  the source's phrases. A proxy: CLIP misses small things and knows no names, so compare
  sources with it rather than read it as a count of errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recaption.eval.reference_metrics import tokenize


def retention(alt_phrases: list[set[str]], captions: list[str]) -> float:
    kept, counted = 0.0, 0
    for phrases, caption in zip(alt_phrases, captions):
        if not phrases:
            continue
        words = set(tokenize(caption).split())
        kept += np.mean([all(w in words for w in tokenize(p).split()) for p in phrases])
        counted += 1
    return 100 * kept / counted if counted else float("nan")


def hallucination_rate(caption_phrases: list[set[str]], image_vectors: np.ndarray, embed_texts: Any, threshold: float) -> float:
    """``image_vectors[i]`` is caption i's image; ``embed_texts`` as ``ClipScorer.embed_texts``."""
    flat = [(i, p) for i, phrases in enumerate(caption_phrases) for p in sorted(phrases)]
    if not flat:
        return float("nan")
    vectors = embed_texts([f"a photo of {p}" for _, p in flat])
    scores = [100 * max(float(np.mean(v @ image_vectors[i])), 0.0) for (i, _), v in zip(flat, vectors)]
    return 100 * float(np.mean([s < threshold for s in scores]))
