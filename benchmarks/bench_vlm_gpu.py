"""GPU throughput of ``vlm_caption`` on real-size architectures with random weights.

The checkpoints are the shapes of ``Salesforce/blip2-opt-2.7b`` (ViT-g/14 at 224, a 12-layer
Q-Former with 32 queries, OPT-2.7B) and ``llava-hf/llava-1.5-7b-hf`` (CLIP ViT-L/14 at 336,
576 image tokens, Llama-2-7B), initialised at random on the GPU, saved to a folder and loaded
back by the stage the way a user's checkpoint is (``from_pretrained`` with the dtype and
quantisation asked for). Random weights rarely say EOS on cue, so every answer is forced to the
same length (``min_new_tokens == max_new_tokens``): the figure is images/s at a fixed output
length. Next to ours, the bare loop a user would write on the same loaded model (processor,
``generate``, ``batch_decode``); the ratio says what our prompting, tidying and provenance cost.

    python -m benchmarks.bench_vlm_gpu --family llava --batches 1,8,32 --dtypes bfloat16,float16,8bit

``--size tiny`` runs the same code on the tests' tiny models (a CPU check of the script).
vLLM is measured when it is importable, on the same folder.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.harness import machine

INSTRUCTION = "Describe this image in one or two sentences."


def real_blip2(folder: Path, device: str = "cuda") -> Path:
    import torch
    import transformers as tf

    from tests.tiny_models import bpe_tokenizer

    tok = bpe_tokenizer()
    opt_2_7b = dict(
        vocab_size=50272, hidden_size=2560, num_hidden_layers=32, ffn_dim=10240, num_attention_heads=32,
        max_position_embeddings=2048, word_embed_proj_dim=2560,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    # Blip2Config's vision and Q-Former defaults are BLIP-2's own (ViT-g/14, 12 layers, 32 queries).
    config = tf.Blip2Config(text_config=opt_2_7b, num_query_tokens=32, image_token_index=tok.convert_tokens_to_ids("<image>"))
    with torch.device(device):
        model = tf.Blip2ForConditionalGeneration(config)
    processor = tf.Blip2Processor(image_processor=tf.BlipImageProcessorPil(size={"height": 224, "width": 224}), tokenizer=tok, num_query_tokens=32)
    return save(folder, model, processor)


def real_llava(folder: Path, device: str = "cuda") -> Path:
    import torch
    import transformers as tf

    from tests.tiny_models import LLAVA_CHAT, bpe_tokenizer

    tok = bpe_tokenizer(LLAVA_CHAT)
    config = tf.LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
        ),
        text_config=dict(
            model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2, projector_hidden_act="gelu",
    )
    with torch.device(device):
        model = tf.LlavaForConditionalGeneration(config)
    image_processor = tf.CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = tf.LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT, num_additional_image_tokens=1,
    )
    return save(folder, model, processor)


def save(folder: Path, model, processor) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build(family: str, size: str, root: Path) -> Path:
    import torch

    from tests.tiny_models import make_blip2, make_llava

    folder = root / f"{family}-{size}"
    if size == "tiny":
        return make_blip2(folder) if family == "blip2" else make_llava(folder)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # initialised in bf16 on the GPU: minutes faster than fp32 on the CPU
    try:
        return real_blip2(folder) if family == "blip2" else real_llava(folder)
    finally:
        torch.set_default_dtype(torch.float32)
        free_gpu()


def free_gpu() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def photos(n: int) -> list[bytes]:
    from tests.conftest import encode, photo

    names = ("astronaut", "chelsea", "coffee", "rocket")
    return [encode(photo(names[i % len(names)]).rotate(7 * i)) for i in range(n)]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(run, batches: list[list[bytes]]) -> float:
    """Seconds for ``batches`` after one warm-up batch."""
    run(batches[0])
    sync()
    start = time.perf_counter()
    for chunk in batches:
        run(chunk)
    sync()
    return time.perf_counter() - start


def counts(batch: int, images: int) -> int:
    """Images timed at one batch size: batch 1 is slow, so a quarter; at least two full batches."""
    return max(1, images // 4) if batch == 1 else max(2 * batch, images)


def measure(folder: Path, setting: str, batches: list[int], new_tokens: int, pics: list[bytes], backend: str = "transformers"):
    """Load the stage once for ``setting`` (a dtype, or 8bit/4bit) and yield one row per batch size."""
    import io

    import torch
    from PIL import Image

    from recaption.record import Pair
    from recaption.stages.caption import VlmCaption
    from recaption.text.prompts import TEMPLATES, render

    quant = setting if setting.endswith("bit") else "none"
    stage = VlmCaption(
        model=str(folder), template="plain", max_new_tokens=new_tokens, names=False,
        backend=backend, dtype="auto" if quant != "none" else setting, quantization=quant,
    )
    start = time.perf_counter()
    stage.setup()
    load_s = round(time.perf_counter() - start, 1)
    cap = stage.captioner
    if backend == "transformers":
        cap.model.generation_config.min_new_tokens = new_tokens  # a fixed output length, EOS or not
        prompt = cap.format_prompt(render(TEMPLATES["plain"]))

    def ours(chunk):
        stage.process([Pair(f"p{i}", b) for i, b in enumerate(chunk)])

    def bare(chunk):
        pics = [Image.open(io.BytesIO(b)).convert("RGB") for b in chunk]
        inputs = cap.processor(images=pics, text=[prompt] * len(pics), return_tensors="pt", padding=True).to(cap.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(cap.model.dtype)
        with torch.inference_mode():
            ids = cap.model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=cap.tokenizer.pad_token_id
            )
        cap.tokenizer.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    for batch in batches:
        images = (pics * (1 + 2 * batch // len(pics)))[: counts(batch, len(pics))]
        chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        row = {"setting": setting, "backend": backend, "batch": batch, "images": len(images), "new_tokens": new_tokens, "load_s": load_s}
        ours_s = timed(ours, chunks)
        row["ours_img_s"] = round(len(images) / ours_s, 2)
        row["tokens_s"] = round(len(images) * new_tokens / ours_s, 1)
        if backend == "transformers":
            bare_s = timed(bare, chunks)
            row["bare_img_s"] = round(len(images) / bare_s, 2)
            row["ratio_ours_bare"] = round(ours_s / bare_s, 3)
        if torch.cuda.is_available():
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        yield row


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--family", choices=("blip2", "llava"), required=True)
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument(
        "--plan", nargs="+", default=["bfloat16:1,8,32", "float16:32", "8bit:8,32"],
        help="SETTING:BATCHES, a setting being float32/float16/bfloat16 or 8bit/4bit (bitsandbytes)",
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--images", type=int, default=64, help="images timed per batch size (after one warm-up batch); batch 1 times a quarter")
    parser.add_argument("--out", type=Path, default=None, help="append the rows to this JSON-lines file")
    parser.add_argument(
        "--workdir", type=Path, default=None,
        help="where the random checkpoint is saved (default: /dev/shm when there is one; LLaVA-7B needs 14 GB)",
    )
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"machine: {machine()}; {gpu}; torch {torch.__version__}; transformers {__import__('transformers').__version__}")
    default = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(dir=args.workdir or default))
    start = time.perf_counter()
    try:
        folder = build(args.family, args.size, root)
        print(f"{args.family} ({args.size}) built and saved in {time.perf_counter() - start:.0f} s", flush=True)
        run_plan(args, folder, gpu)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_plan(args, folder: Path, gpu: str) -> None:
    import importlib.util

    pics = photos(min(args.images, 16))  # distinct photos, repeated up to each batch size's count
    plan = [("transformers", *item.split(":")) for item in args.plan]
    if importlib.util.find_spec("vllm") is not None:
        plan.append(("vllm", "bfloat16", plan[0][2]))
    for backend, setting, batches in plan:
        try:
            for row in measure(folder, setting, [int(b) for b in batches.split(",")], args.new_tokens, pics, backend):
                report({"family": args.family, "size": args.size, "gpu": gpu, **row}, args.out)
        except Exception as exc:  # noqa: BLE001 - a setting that fails is a row in the table, not the end of the run
            report({"family": args.family, "setting": setting, "backend": backend, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}, args.out)
        free_gpu()  # the finished generator's model goes before the next setting loads


def report(row: dict, out: Path | None) -> None:
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
