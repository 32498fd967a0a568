"""vLLM on the CPU (make test-vllm runs these in .venv-vllm; elsewhere they skip).

The engine runs in this process with eager execution: LLM() is then a matter of seconds
rather than the half minute a worker process and graph capture take.
"""

import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: plenty for tiny models

# CPU engine options for the tiny models: one process, no graph capture, a short context.
ENGINE = {"enforce_eager": True, "distributed_executor_backend": "uni", "max_model_len": 512}


@pytest.fixture(scope="session")
def wide_vlms(tmp_path_factory):
    """The tests' tiny checkpoints at width 64 with 2 heads: vLLM's CPU attention needs heads of 32+."""
    pytest.importorskip("vllm")
    from tests.tiny_models import make_blip2, make_llava, make_qwen2_vl

    root = tmp_path_factory.mktemp("wide-vlms")
    return {
        "llava": make_llava(root / "llava", width=64),
        "llava_next": make_llava(root / "llava-next", next_=True, width=64),
        "qwen2_vl": make_qwen2_vl(root / "qwen2-vl", width=64),
        "blip2": make_blip2(root / "blip2", width=64),
    }
