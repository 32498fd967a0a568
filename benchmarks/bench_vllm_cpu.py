"""vlm_caption's vLLM backend against its transformers backend on the CPU, side by side.

The same tiny random LLaVA (the tests' checkpoint at width 64, which vLLM's CPU attention
accepts), the same images and prompts, greedy, a fixed answer length; images/s of each
backend's ``generate`` after one warm-up batch, alternating the two so that a noisy machine
hits both alike. Runs in the vLLM environment (make .venv-vllm / scripts/vllm_cpu_env.sh):

    .venv-vllm/bin/python -m benchmarks.bench_vllm_cpu [--images 64] [--batch 16] [--new-tokens 24]

A tiny model measures each backend's overhead per image and token (scheduling, batching,
pre- and post-processing), not its arithmetic: the ratio on a real model and a GPU differs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.harness import machine


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per backend, alternating")
    args = parser.parse_args()

    import torch
    import vllm
    from PIL import Image

    from recaption.models.captioner import Sampling
    from recaption.models.vlm import VllmCaptioner, load_captioner
    from tests.conftest import noise_image
    from tests.tiny_models import make_llava

    print(f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads); vllm {vllm.__version__}")
    folder = make_llava(Path(tempfile.mkdtemp()) / "llava", width=64)
    start = time.perf_counter()
    engines = {
        "transformers": load_captioner(str(folder), "transformers", "cpu", "float32"),
        "vllm": VllmCaptioner(str(folder), "float32", {"enforce_eager": True, "distributed_executor_backend": "uni", "max_model_len": 512}),
    }
    print(f"both loaded in {time.perf_counter() - start:.1f} s")
    images: list[Image.Image] = [noise_image(i, (224 + 8 * (i % 5), 224)) for i in range(args.images)]
    prompt = engines["transformers"].format_prompt("Describe this image in one sentence.")
    # A fixed answer length: random weights rarely say EOS, and forcing it keeps both equal.
    engines["transformers"].model.generation_config.min_new_tokens = args.new_tokens
    sampling = Sampling(max_new_tokens=args.new_tokens)
    chunks = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]

    from vllm import SamplingParams

    from recaption.models.captioner import request_seed

    def vllm_generate(chunk: list[Image.Image]) -> None:
        # VllmCaptioner.generate with min_tokens as well: the same fixed length as transformers.
        n = args.new_tokens
        params = [SamplingParams(max_tokens=n, min_tokens=n, temperature=0, seed=request_seed(0, im)) for im in chunk]
        engines["vllm"].llm.generate([{"prompt": prompt, "multi_modal_data": {"image": im}} for im in chunk], params, use_tqdm=False)

    def generate(name: str, chunk: list[Image.Image]) -> None:
        if name == "vllm":
            vllm_generate(chunk)
        else:
            engines[name].generate(chunk, [prompt] * len(chunk), sampling)

    def run(name: str) -> float:
        began = time.perf_counter()
        for chunk in chunks:
            generate(name, chunk)
        return time.perf_counter() - began

    for name in engines:  # warm-up
        generate(name, chunks[0])
    seconds = {name: 0.0 for name in engines}
    for _ in range(args.rounds):
        for name in engines:
            seconds[name] += run(name)
    total = args.images * args.rounds
    rows = {name: round(total / s, 1) for name, s in seconds.items()}
    print(json.dumps({
        "images": args.images, "batch": args.batch, "new_tokens": args.new_tokens, "rounds": args.rounds,
        "images_per_s": rows, "vllm_over_transformers": round(rows["vllm"] / rows["transformers"], 2),
    }))


if __name__ == "__main__":
    main()
