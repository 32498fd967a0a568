"""``recaption export INPUT OUTPUT --to FORMAT``: recaption's output in the layout a training
framework reads, each caption chosen by the caption policy.

- ``open_clip``: WebDataset shards ``OUTPUT/NNNNN.tar`` of ``KEY.<ext>`` + ``KEY.txt`` (+ a
  small ``KEY.json``), the layout open_clip's ``--train-data`` reads;
- ``open_clip_csv``: ``OUTPUT/images/`` and ``OUTPUT/train.csv`` (tab-separated ``filepath``,
  ``title``), open_clip's ``--dataset-type csv`` (``--csv-img-key filepath --csv-caption-key title``);
- ``llava``: ``OUTPUT/llava.json``, LLaVA's conversation list (``<image>`` + an instruction,
  answered by the caption), images in ``OUTPUT/images/``;
- ``diffusers``: ``OUTPUT/train/`` with the images and ``metadata.jsonl`` (``file_name``,
  ``text``), the image-folder layout diffusers' training scripts load;
- ``hf``: ``OUTPUT/data/train-NNNNN-of-MMMMM.parquet`` with ``image`` (``{bytes, path}``, the
  datasets Image feature), ``text`` and ``image_id``: ``datasets.load_dataset("parquet", ...)``.

Images are written as they were stored (no re-encoding). A pair whose image cannot be read is
listed in ``OUTPUT/skipped.jsonl`` with the reason; nothing else is left out.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recaption.io.parquet import IMAGE_STRUCT, with_hf_features
from recaption.io.webdataset import image_bytes_and_ext
from recaption.loaders.policy import CaptionPolicy
from recaption.record import Pair

FORMATS = ("open_clip", "open_clip_csv", "llava", "diffusers", "hf")
LLAVA_PROMPT = "<image>\nDescribe this image."


def _samples(pairs: list[Pair], policy: CaptionPolicy, skipped: list[dict]) -> Iterator[tuple[Pair, bytes, str, str]]:
    for k, pair in enumerate(pairs):
        try:
            data, ext = image_bytes_and_ext(pair)
        except OSError as exc:
            skipped.append({"image_id": pair.image_id, "reason": getattr(exc, "reason", "unreadable_image"), "detail": str(exc)[:200]})
            continue
        yield pair, data, ext, policy.caption(pair, k)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def export(pairs: list[Pair], output: Path, fmt: str, policy: CaptionPolicy, shard_size: int = 10_000, refused: list[Pair] | None = None) -> dict[str, Any]:
    """Write ``pairs`` in the layout ``fmt``; ``refused``: pairs whose image path the reader
    refused (outside the input), listed as skipped with that reason."""
    if fmt not in FORMATS:
        raise ValueError(f"--to must be one of {FORMATS}")
    output.mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = [{"image_id": p.image_id, "reason": p.reject.reason, "detail": p.reject.detail[:300]} for p in refused or [] if p.reject]
    samples = _samples(pairs, policy, skipped)
    if fmt == "open_clip":
        written = _open_clip_shards(samples, output, shard_size)
    elif fmt == "hf":
        written = _hf_parquet(samples, output, shard_size)
    else:
        written = _image_folder(samples, output, fmt)
    if skipped:
        with open(output / "skipped.jsonl", "w", encoding="utf-8") as fh:
            for row in skipped:
                fh.write(json.dumps(row) + "\n")
    return {"format": fmt, "written": written, "skipped": len(skipped), "policy": policy.__dict__}


def _open_clip_shards(samples: Iterator[tuple[Pair, bytes, str, str]], output: Path, shard_size: int) -> int:
    """WebDataset shards open_clip trains from, and sizes.json (its --train-num-samples)."""
    tar = None
    sizes: dict[str, int] = {}
    written = 0
    for n, (pair, data, ext, text) in enumerate(samples):
        if n % shard_size == 0:
            if tar is not None:
                tar.close()
            name = f"{n // shard_size:05d}.tar"
            tar = tarfile.open(output / name, "w")
            sizes[name] = 0
        sizes[name] += 1
        key = f"{n:09d}"
        _add(tar, f"{key}.{ext}", data)
        _add(tar, f"{key}.txt", text.encode())
        _add(tar, f"{key}.json", json.dumps({"image_id": pair.image_id, "caption": text}).encode())
        written += 1
    if tar is not None:
        tar.close()
    (output / "sizes.json").write_text(json.dumps(sizes, indent=1) + "\n")
    return written


def _image_folder(samples: Iterator[tuple[Pair, bytes, str, str]], output: Path, fmt: str) -> int:
    """The layouts that are a folder of images and one index: LLaVA's JSON, diffusers'
    metadata.jsonl, open_clip's tab-separated CSV."""
    folder = output / ("train" if fmt == "diffusers" else "images")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, (pair, data, ext, text) in enumerate(samples):
        name = f"{n:09d}.{ext}"
        (folder / name).write_bytes(data)  # the bytes read and checked once (never the path again)
        if fmt == "llava":
            rows.append({"id": pair.image_id, "image": name, "conversations": [{"from": "human", "value": LLAVA_PROMPT}, {"from": "gpt", "value": text}]})
        elif fmt == "open_clip_csv":
            rows.append({"filepath": str((folder / name).resolve()), "title": text})
        else:
            rows.append({"file_name": name, "text": text, "image_id": pair.image_id})
    if fmt == "llava":
        (output / "llava.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    elif fmt == "open_clip_csv":
        # open_clip's CsvDataset reads it with pandas, sep="\t"; quoting keeps any caption whole.
        with open(output / "train.csv", "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t")
            writer.writerow(["filepath", "title"])
            writer.writerows([row["filepath"], row["title"]] for row in rows)
    else:
        with open(folder / "metadata.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def _hf_parquet(samples: Iterator[tuple[Pair, bytes, str, str]], output: Path, shard_size: int) -> int:
    """Parquet with the datasets Image feature, train-NNNNN-of-MMMMM files."""


    schema = with_hf_features(pa.schema([("image", IMAGE_STRUCT), ("text", pa.string()), ("image_id", pa.string())]))
    data_dir = output / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"image": {"bytes": data, "path": f"{pair.image_id}.{ext}"}, "text": text, "image_id": pair.image_id} for pair, data, ext, text in samples]
    parts = -(-len(rows) // shard_size)
    for part in range(parts):
        chunk = rows[part * shard_size : (part + 1) * shard_size]
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), data_dir / f"train-{part:05d}-of-{parts:05d}.parquet")
    return len(rows)
