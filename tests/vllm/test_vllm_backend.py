"""vlm_caption's vLLM backend, for real, on the CPU: the same prompts, candidates, sampling,
provenance and tidying as the transformers backend, checked against it."""

import pytest

from recaption.record import Pair
from tests.conftest import encode, noise_image
from tests.vllm.conftest import ENGINE

vllm = pytest.importorskip("vllm")

IMAGES = [noise_image(i, (64 + 16 * i, 48)) for i in range(3)]


def same_answer(vllm_text: str, transformers_text: str) -> bool:
    # vLLM holds back a trailing incomplete UTF-8 character that transformers decodes as U+FFFD.
    return vllm_text == transformers_text.rstrip("\ufffd")


@pytest.mark.parametrize("family", ["llava", "llava_next", "qwen2_vl", "blip2"])
def test_greedy_answers_match_the_transformers_backend(wide_vlms, family):
    from recaption.models.captioner import Sampling
    from recaption.models.vlm import VllmCaptioner, load_captioner

    folder = str(wide_vlms[family])
    engine = VllmCaptioner(folder, "float32", ENGINE)
    reference = load_captioner(folder, "transformers", "cpu", "float32")
    prompt = engine.format_prompt("Describe this image.")
    assert prompt == reference.format_prompt("Describe this image.")  # the same template either way
    greedy = Sampling(max_new_tokens=8)
    got = engine.generate(IMAGES, [prompt] * len(IMAGES), greedy)
    want = reference.generate(IMAGES, [prompt] * len(IMAGES), greedy)
    assert all(len(g) == 1 for g in got)
    assert all(same_answer(g[0], w[0]) for g, w in zip(got, want)), (got, want)
    assert "@" in engine.model_hash and engine.model_hash != reference.model_hash  # the backend is part of the hash


def test_the_stage_writes_n_candidates_with_per_image_seeds_that_reproduce(wide_vlms):
    from recaption.stages.caption import VlmCaption

    def run(order):
        stage = VlmCaption(
            model=str(wide_vlms["llava"]), backend="vllm", dtype="float32", n=2, temperature=1.0, max_new_tokens=6,
            seed=3, template="plain", names=False, enforce_eager=True, max_model_len=512, engine_args={"distributed_executor_backend": "uni"},
        )
        batch = [Pair(f"p{i}", encode(IMAGES[i]), texts=["a red car"]) for i in order]
        stage(batch)
        return stage, {p.image_id: [c for c in p.captions if c.source.startswith("vlm:")] for p in batch}

    stage, first = run([0, 1, 2])
    for made in first.values():
        assert len(made) == 2 and [c.params["candidate"] for c in made] == [0, 1]
        assert all(c.params["backend"] == "vllm" and c.params["n"] == 2 and c.model_hash == stage.captioner.model_hash for c in made)
    raw = {pid: [c.params.get("raw", c.text) for c in made] for pid, made in first.items()}
    # Each image draws from its own stream: the three images' answers are not one stream's.
    assert len({tuple(v) for v in raw.values()}) == 3
    # The same images in another order and batch get the same answers: the seeds follow the image.
    _, again = run([2, 0, 1])
    assert {pid: [c.params.get("raw", c.text) for c in made] for pid, made in again.items()} == raw


def test_a_checkpoint_vllm_cannot_load_is_one_clear_error(wide_vlms):
    from recaption.models.hf import ModelLoadError
    from recaption.models.vlm import VllmCaptioner

    with pytest.raises(ModelLoadError, match="vLLM could not load"):
        VllmCaptioner(str(wide_vlms["llava"]), "float32", {**ENGINE, "max_model_len": 10**7})
