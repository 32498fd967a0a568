"""vlm_caption on a GPU: half precision, 8-bit (bitsandbytes) and the vLLM backend.

Skipped where there is no CUDA device (CI never has one); run them on a GPU machine with
``pytest tests/stages/test_vlm_gpu.py``.
"""

import pytest

from recaption.record import Pair
from tests.conftest import encode, noise_image

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def pairs(n):
    return [Pair(f"p{i}", encode(noise_image(i, (64 + 8 * i, 48))), texts=["a red car"]) for i in range(n)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_cuda_batches_like_single_calls(tiny_vlms, dtype):
    from recaption.models.captioner import Sampling
    from recaption.models.vlm import TransformersCaptioner

    captioner = TransformersCaptioner(str(tiny_vlms["llava"]), device="cuda", dtype=dtype)
    assert captioner.model.dtype == getattr(torch, dtype) and captioner.model.device.type == "cuda"
    images = [noise_image(i, (64 + 8 * i, 48)) for i in range(4)]
    prompts = [captioner.format_prompt("Describe this image.")] * 4
    greedy = Sampling(max_new_tokens=6)
    batched = captioner.generate(images, prompts, greedy)
    assert batched == [captioner.generate([im], [p], greedy)[0] for im, p in zip(images, prompts)]


def test_8bit_weights_load_through_bitsandbytes_and_caption(tiny_vlms):
    pytest.importorskip("bitsandbytes")
    from recaption.stages.caption import VlmCaption

    stage = VlmCaption(model=str(tiny_vlms["llava"]), template="plain", quantization="8bit", max_new_tokens=5, names=False)
    batch = pairs(3)
    stage(batch)
    assert stage.captioner.model.config.quantization_config is not None
    assert all(p.reject is None and "vlm_candidates" in p.scores for p in batch)


def test_vllm_backend_writes_n_candidates(tmp_path):
    pytest.importorskip("vllm")
    from recaption.stages.caption import VlmCaption
    from tests.tiny_models import make_llava

    folder = make_llava(tmp_path / "llava", width=64)  # heads of 32: what vLLM's attention kernels take
    stage = VlmCaption(model=str(folder), backend="vllm", n=2, temperature=0.8, max_new_tokens=5, names=False, max_model_len=512)
    batch = pairs(2)
    stage(batch)
    assert all(p.reject is None and p.scores["vlm_candidates"] <= 2 for p in batch)
    assert all(c.params["backend"] == "vllm" for p in batch for c in p.captions if c.source.startswith("vlm:"))
