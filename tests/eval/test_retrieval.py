"""Recall@K against constructed embeddings whose ranks are known."""

import numpy as np
import pytest

from recaption.eval.retrieval import recall_at_k


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_recall_at_k_on_known_ranks():
    images = np.eye(4)
    # caption 0 finds its image first; caption 1 second (image 2 is closer); caption 2 third
    # (images 3 and 0 are closer); caption 3 ties its image with image 0: second, not first.
    texts = unit([[1, 0, 0, 0], [0, 0.6, 0.8, 0], [0.5, 0, 0.4, 0.7], [0.7071, 0, 0, 0.7071]])
    r = recall_at_k(images, texts, ks=(1, 2, 3))
    assert (r["t2i_r1"], r["t2i_r2"], r["t2i_r3"]) == (25.0, 75.0, 100.0)
    # image->text: image 0's closest caption is caption 0; image 3's is caption 3 ...
    sim = (texts @ images.T).T
    expected = [100 * np.mean([(sim[i] >= sim[i, i]).sum() - 1 < k for i in range(4)]) for k in (1, 2, 3)]
    assert [r["i2t_r1"], r["i2t_r2"], r["i2t_r3"]] == expected


def test_identical_embeddings_are_perfect_and_mismatched_lengths_are_an_error():
    x = unit(np.random.default_rng(0).normal(size=(20, 8)))
    assert all(v == 100.0 for v in recall_at_k(x, x).values())
    with pytest.raises(ValueError, match="one caption per image"):
        recall_at_k(x, x[:5])
