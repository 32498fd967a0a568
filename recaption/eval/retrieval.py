"""Retrieval Recall@K between images and one caption source, with a CLIP-like model.

Image i and caption i are each other's only match. Text->image: for each caption, is its
image among the K images most similar to it; image->text the other way round. Embeddings are
L2-normalised, so similarity is the dot product. Ties count against the match (a caption
that is equally close to many images has not found its own).
"""

from __future__ import annotations

import numpy as np

KS = (1, 5, 10)


def recall_at_k(images: np.ndarray, texts: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """``images`` and ``texts``: (n, d), row i of each belonging together. Percentages."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} captions: retrieval needs one caption per image")
    sim = texts @ images.T  # (captions, images)
    out: dict[str, float] = {}
    for direction, matrix in (("t2i", sim), ("i2t", sim.T)):
        own = np.diag(matrix)[:, None]
        # rank = how many others score at least as high as the true match
        rank = (matrix >= own).sum(axis=1) - 1
        for k in ks:
            out[f"{direction}_r{k}"] = 100 * float(np.mean(rank < k)) if len(rank) else float("nan")
    return out
