"""clip_score: through a tiny random CLIP saved and loaded back like a hub checkpoint.

The bare computations decode JPEGs as the stage does (``load_rgb`` at the model's side, JPEG
draft decoding), so that the comparison is of the scoring, not of two decoders."""

import numpy as np
import pytest

from recaption.imaging import load_rgb
from recaption.record import Caption, Pair
from recaption.stages.base import StageError
from tests.conftest import encode, noise_image

pytest.importorskip("transformers")


def pair_with(i: int, *texts: str, **meta) -> Pair:
    pair = Pair(f"img-{i}", encode(noise_image(i)), captions=[Caption(t, "alt-text" if k == 0 else "rules") for k, t in enumerate(texts)])
    pair.meta.update(meta)
    return pair


def bare_cosines(model_dir, image, texts, padding=True):
    """What transformers itself says: the scores must equal these, not merely look plausible."""
    import torch
    import transformers as tf

    model, proc = tf.AutoModel.from_pretrained(model_dir), tf.AutoProcessor.from_pretrained(model_dir)
    with torch.inference_mode():
        im = model.get_image_features(**proc(images=[image], return_tensors="pt")).pooler_output
        tx = model.get_text_features(**proc.tokenizer(texts, return_tensors="pt", padding=padding)).pooler_output
    im, tx = im / im.norm(dim=-1, keepdim=True), tx / tx.norm(dim=-1, keepdim=True)
    return (tx @ im.T).squeeze(-1).numpy()


def test_scores_equal_transformers_and_record_the_model(tiny_clip, tmp_path):
    from recaption.stages.scoring import ClipScore

    pairs = [pair_with(0, "a photo of a cat", "a red car on a road"), pair_with(1, "a dog")]
    ClipScore(model=str(tiny_clip), cache=str(tmp_path / "cache"))(pairs)
    expected = bare_cosines(tiny_clip, load_rgb(pairs[0].image, 32), ["a photo of a cat", "a red car on a road"])
    got = [c.scores["clip_score"] for c in pairs[0].captions]
    assert got == pytest.approx(list(100 * np.maximum(expected, 0)), abs=1e-3)
    assert all(c.scores["clip_chunks"] == 1 for p in pairs for c in p.captions)
    by = pairs[0].meta["scored_by"]["clip_score"]
    assert by["scale"] == "100" and by["model"].startswith("clip@")


def test_siglip_texts_are_padded_to_the_length_it_was_trained_with(tmp_path):
    pytest.importorskip("sentencepiece")
    from recaption.stages.scoring import ClipScore
    from tests.tiny_models import make_siglip

    siglip = make_siglip(tmp_path / "siglip")
    pairs = [pair_with(5, "a cat on a sofa", "a dog")]
    ClipScore(model=str(siglip), cache="none")(pairs)
    image = load_rgb(pairs[0].image, 32)  # JPEGs are draft-decoded at the model's side, as the stage does
    padded = bare_cosines(siglip, image, ["a cat on a sofa", "a dog"], padding="max_length")
    assert [c.scores["clip_score"] for c in pairs[0].captions] == pytest.approx(list(100 * np.maximum(padded, 0)), abs=1e-3)
    assert not np.allclose(padded, bare_cosines(siglip, image, ["a cat on a sofa", "a dog"]), atol=1e-3)  # padding matters
    assert pairs[0].meta["scored_by"]["clip_score"]["model"].startswith("siglip@")


def test_hessel_scale_uses_the_prefix_and_refclip_needs_references(tiny_clip, tmp_path):
    from recaption.stages.scoring import ClipScore

    pair = pair_with(2, "a cat", references=["a small cat", "a kitten on a rug"])
    ClipScore(model=str(tiny_clip), scale="hessel", cache="none")([pair])
    cos = bare_cosines(tiny_clip, load_rgb(pair.image, 32), ["A photo depicts a cat"])[0]
    cap = pair.captions[0]
    assert cap.scores["clip_score"] == pytest.approx(2.5 * max(cos, 0), abs=1e-4)
    assert "refclip_score" in cap.scores and 0 <= cap.scores["refclip_score"] <= 2.5
    lone = pair_with(3, "a cat")
    ClipScore(model=str(tiny_clip), scale="hessel", cache="none")([lone])
    assert "refclip_score" not in lone.captions[0].scores


def test_a_caption_over_the_budget_is_scored_over_chunks_not_truncated(tiny_clip):
    from recaption.stages.scoring import ClipScore

    long = ". ".join(f"Sentence number {i} says something about a red car and a small dog" for i in range(12)) + "."
    pair = pair_with(4, long)
    stage = ClipScore(model=str(tiny_clip), cache="none")
    stage([pair])
    cap = pair.captions[0]
    assert cap.scores["clip_chunks"] > 1
    chunks = stage.scorer.embed_texts([long])[0]
    image = stage.scorer.embed_images([load_rgb(pair.image, 32)])[0]
    assert cap.scores["clip_score"] == pytest.approx(100 * max(float(np.mean(chunks @ image)), 0), abs=1e-3)


def test_rescoring_new_captions_reads_image_embeddings_from_the_cache(tiny_clip, tmp_path):
    from recaption.stages.scoring import ClipScore

    pairs = [pair_with(i, "a photo of a pattern") for i in range(3)]
    ClipScore(model=str(tiny_clip), cache=str(tmp_path))(pairs)
    first = [p.captions[0].scores["clip_score"] for p in pairs]
    for p in pairs:
        p.captions.append(Caption("a new caption from a captioner", "vlm:test"))
        p.image = str(tmp_path / "gone.jpg")  # were the image decoded again, the pair would be rejected
    again = ClipScore(model=str(tiny_clip), cache=str(tmp_path))
    again(pairs)
    assert all(p.reject is None for p in pairs)
    assert (again.cache.hits, again.cache.misses) == (3, 0)
    assert [p.captions[0].scores["clip_score"] for p in pairs] == first  # old scores kept, not recomputed
    assert all("clip_score" in p.captions[1].scores for p in pairs)


def test_a_model_that_is_not_there_fails_with_a_clear_message(tmp_path):
    from recaption.stages.scoring import ClipScore

    stage = ClipScore(model=str(tmp_path / "no-such-model"), cache="none")
    with pytest.raises(StageError, match="cannot load CLIP processor"):
        stage([pair_with(0, "a cat")])
