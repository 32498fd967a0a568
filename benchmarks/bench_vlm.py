"""Our captioning and CLIP-scoring overhead against bare transformers loops on the same model.

Both sides start from the same encoded JPEGs and the same checkpoint folder (a small random
model of the real classes, built offline by tests/tiny_models.py); the bare side is what a
user would write: decode, processor, ``generate`` / ``get_*_features``, decode the tokens.
Ours is the stage (``vlm_caption`` with the names check off, ``clip_score`` without cache),
which adds prompt templating, output tidying, the sensitive-attribute check and provenance.
Runs are interleaved and repeated; the ratio of medians is reported (target <= 1.15).

    .venv/bin/python -m benchmarks.bench_vlm [--n 64] [--repeats 5] [--family llava]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from PIL import Image

from benchmarks.harness import OUT, machine


def bare_generate(folder, images_bytes, batch, max_new_tokens):
    import torch
    import transformers as tf

    model = tf.AutoModelForImageTextToText.from_pretrained(folder).eval()
    proc = tf.AutoProcessor.from_pretrained(folder)
    proc.tokenizer.padding_side = "left"
    prompt = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}], add_generation_prompt=True)

    def run():
        out = []
        for i in range(0, len(images_bytes), batch):
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in images_bytes[i : i + batch]]
            inputs = proc(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True)
            with torch.inference_mode():
                ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            out += proc.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return out

    return run


def ours_generate(folder, images_bytes, batch, max_new_tokens):
    from recaption.record import Pair
    from recaption.stages.caption import VlmCaption

    stage = VlmCaption(model=str(folder), template="plain", batch_size=batch, max_new_tokens=max_new_tokens, names=False)
    stage.setup()

    def run():
        pairs = [Pair(f"p{i}", b) for i, b in enumerate(images_bytes)]
        for i in range(0, len(pairs), batch):
            stage.process(pairs[i : i + batch])
        return pairs

    return run


def bare_clip(folder, images_bytes, texts, batch):
    import torch
    import transformers as tf

    model, proc = tf.CLIPModel.from_pretrained(folder).eval(), tf.AutoProcessor.from_pretrained(folder)

    def run():
        scores = []
        for i in range(0, len(images_bytes), batch):
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in images_bytes[i : i + batch]]
            with torch.inference_mode():
                im = model.get_image_features(**proc(images=images, return_tensors="pt")).pooler_output
                tx = model.get_text_features(**proc(text=texts[i : i + batch], return_tensors="pt", padding=True)).pooler_output
            im, tx = im / im.norm(dim=-1, keepdim=True), tx / tx.norm(dim=-1, keepdim=True)
            scores += (100 * (im * tx).sum(-1).clamp_min(0)).tolist()
        return scores

    return run


def ours_clip(folder, images_bytes, texts, batch):
    from recaption.record import Caption, Pair
    from recaption.stages.scoring import ClipScore

    stage = ClipScore(model=str(folder), cache="none", batch_size=batch)
    stage.setup()

    def run():
        pairs = [Pair(f"p{i}", b, captions=[Caption(t, "alt-text")]) for i, (b, t) in enumerate(zip(images_bytes, texts))]
        for i in range(0, len(pairs), batch):
            stage.process(pairs[i : i + batch])
        return pairs

    return run


def timed_medians(runs: dict, repeats: int) -> dict[str, float]:
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    import torch

    from tests.conftest import encode, noise_image
    from tests.tiny_models import make_clip, make_llava

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = OUT / "tiny-models"
    llava, clip = make_llava(folder / "llava"), make_clip(folder / "clip", width=64)
    images = [encode(noise_image(i, (320, 240))) for i in range(args.n)]
    texts = [f"a photo number {i} of a colourful pattern on a wall" for i in range(args.n)]
    print(f"machine: {machine()}; {args.n} images, batch {args.batch}, {args.repeats} interleaved runs, one thread")
    gen = timed_medians({"bare": bare_generate(llava, images, args.batch, args.max_new_tokens), "ours": ours_generate(llava, images, args.batch, args.max_new_tokens)}, args.repeats)
    print(f"vlm_caption (tiny LLaVA, greedy, {args.max_new_tokens} new tokens): bare {args.n / gen['bare']:.1f} img/s, "
          f"ours {args.n / gen['ours']:.1f} img/s, time ratio ours/bare {gen['ours'] / gen['bare']:.3f}")
    sc = timed_medians({"bare": bare_clip(clip, images, texts, args.batch), "ours": ours_clip(clip, images, texts, args.batch)}, args.repeats)
    print(f"clip_score (tiny CLIP): bare {args.n / sc['bare']:.1f} pairs/s, ours {args.n / sc['ours']:.1f} pairs/s, "
          f"time ratio ours/bare {sc['ours'] / sc['bare']:.3f}")


if __name__ == "__main__":
    main()
