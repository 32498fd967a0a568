"""Training loaders vs a plain PIL decode loop over the same files, in the same run.

2,000 real-size JPEGs (1024x768, from scikit-image's photos) in a seed-schema JSONL and as
WebDataset shards. Each side decodes every image to RGB and, in the "with processor" rows,
runs CLIP's image preprocessing (224 px) and tokenises the caption to 77 tokens. Ours is a
DataLoader with 2 workers over ``ImageTextPairDataset`` / ``WebDatasetPairs``; the baseline is
one loop in this process. Interleaved, medians of ``--repeats``. Target: >= 0.8 of the loop.

    .venv/bin/python -m benchmarks.bench_loaders [--n 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tarfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.harness import OUT, machine, real_size_jpegs


def make_shards(manifest: Path, folder: Path, per_shard: int = 250) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in open(manifest)]
    paths = []
    for start in range(0, len(records), per_shard):
        path = folder / f"{start // per_shard:05d}.tar"
        paths.append(str(path))
        if path.exists():
            continue
        with tarfile.open(path, "w") as tar:
            for rec in records[start : start + per_shard]:
                tar.add(manifest.parent / rec["image_path"], arcname=f"{rec['image_id']}.jpg")
                text = rec["texts"][0].encode()
                info = tarfile.TarInfo(f"{rec['image_id']}.txt")
                info.size = len(text)
                tar.addfile(info, io.BytesIO(text))
    return paths


def main() -> None:
    import torch
    import transformers as tf

    from recaption.loaders import ImageTextPairDataset, WebDatasetPairs, skip_broken_collate
    from recaption.text.clip_tokens import hf_clip_tokenizer

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest = real_size_jpegs(OUT / f"loader-jpegs-{args.n}", args.n)
    shards = make_shards(manifest, OUT / f"loader-shards-{args.n}")
    records = [json.loads(line) for line in open(manifest)]
    processor = tf.CLIPProcessor(image_processor=tf.CLIPImageProcessorPil(), tokenizer=hf_clip_tokenizer())

    def plain(with_processor: bool):
        def run():
            for rec in records:
                image = Image.open(manifest.parent / rec["image_path"]).convert("RGB")
                if with_processor:
                    processor(images=image, text=rec["texts"][0], return_tensors="pt", padding="max_length", truncation=True, max_length=77)
        return run

    def loader(dataset):
        def run():
            for _ in torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=args.workers, collate_fn=skip_broken_collate):
                pass
        return run

    runs = {
        "plain PIL loop, decode": plain(False),
        "ImageTextPairDataset, decode": loader(ImageTextPairDataset(manifest)),
        "WebDatasetPairs, decode": loader(WebDatasetPairs(shards)),
        "plain PIL loop, decode + CLIP processor": plain(True),
        "ImageTextPairDataset + CLIP processor": loader(ImageTextPairDataset(manifest, processor=processor)),
        "WebDatasetPairs + CLIP processor": loader(WebDatasetPairs(shards, processor=processor)),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"machine: {machine()}; {args.n} JPEGs of 1024x768; {args.workers} DataLoader workers; medians of {args.repeats} interleaved runs")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in runs:
        base = "plain PIL loop, decode" if "processor" not in name else "plain PIL loop, decode + CLIP processor"
        print(f"  {name:<42} {args.n / median[name]:7.1f} img/s   {median[base] / median[name]:.2f}x the plain loop")


if __name__ == "__main__":
    main()
