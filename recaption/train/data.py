"""Training examples for the captioner, and their frozen-encoder image embeddings.

- Pre-training (``kind: pretrain``) reads plain pairs with any of recaption's readers. The
  target is the image's longest distinct alt-text; the prompt is one of its other alt-texts
  (or "", when it has no other), drawn afresh each time the example is used.
- Fine-tuning (``kind: finetune``) reads JSON lines of ``{"image", "alt_text", "caption"}``
  (``image_path`` and ``image_id`` also accepted; paths relative to the file's folder or
  ``image_root``): the annotated rounds that the audit flow writes.

Image embeddings are made once by the same code that captioning uses
(``CachedImageEmbeddings``) and kept in the side cache, so a second run, or a fine-tuning run
on the same images, does not encode them again. Records that cannot be used (a broken line,
an unreadable image, no text) are listed with their reason in the run's ``skipped.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from recaption.io import open_reader
from recaption.io.base import ReaderOptions
from recaption.models.embedding_cache import CachedImageEmbeddings
from recaption.record import Pair

EMBED_BATCH = 64


@dataclass
class Example:
    image_id: str
    caption: str
    alt_texts: list[str] = field(default_factory=list)  # the prompt is drawn from these, or ""


@dataclass
class TrainingSet:
    examples: list[Example]
    embeddings: np.ndarray  # one L2-normalised row per example
    skipped: list[dict[str, Any]]


def distinct_texts(texts: list[str]) -> list[str]:
    seen, out = set(), []
    for text in texts:
        t = " ".join(str(text).split())
        if t and t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def pretraining_pairs(data: str, image_root: str | None) -> tuple[list[tuple[Pair, Example]], list[dict[str, Any]]]:
    reader = open_reader(data, None, ReaderOptions(image_root=image_root))
    found, skipped = [], []
    for shard in reader.plan():
        for pair in reader.pairs(shard):
            if pair.reject is not None:
                skipped.append({"image_id": pair.image_id, "reason": pair.reject.reason, "detail": pair.reject.detail})
                continue
            texts = sorted(distinct_texts(pair.texts), key=len, reverse=True)
            if not texts:
                skipped.append({"image_id": pair.image_id, "reason": "no_text", "detail": "no alt-text to learn from"})
                continue
            found.append((pair, Example(pair.image_id, texts[0], texts[1:])))
    return found, skipped


def finetuning_pairs(data: str, image_root: str | None) -> tuple[list[tuple[Pair, Example]], list[dict[str, Any]]]:
    path = Path(data)
    root = Path(image_root) if image_root else path.parent
    found, skipped = [], []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                skipped.append({"line": number, "reason": "malformed_json", "detail": str(exc)[:200]})
                continue
            image = record.get("image") or record.get("image_path") if isinstance(record, dict) else None
            caption = record.get("caption") if isinstance(record, dict) else None
            alt = record.get("alt_text", "") if isinstance(record, dict) else None
            if not isinstance(image, str) or not isinstance(caption, str) or not caption.strip() or not isinstance(alt, str):
                skipped.append({"line": number, "reason": "missing_field", "detail": "needs image (a path), alt_text (a string) and caption (not empty)"})
                continue
            image_id = str(record.get("image_id") or f"line-{number}")
            full = Path(image) if Path(image).is_absolute() else root / image
            found.append((Pair(image_id, str(full)), Example(image_id, " ".join(caption.split()), distinct_texts([alt]))))
    return found, skipped


def training_set(kind: str, data: str, image_root: str | None, encoder: Any, cache_folder: Path | None, progress: bool = True) -> TrainingSet:
    """Read the examples and embed their images with ``encoder`` (a ``ClipScorer``)."""


    found, skipped = (pretraining_pairs if kind == "pretrain" else finetuning_pairs)(data, image_root)
    images = CachedImageEmbeddings(encoder, cache_folder)
    examples, rows = [], []
    bar = tqdm(total=len(found), desc="embedding images", unit="img", disable=not progress)
    for start in range(0, len(found), EMBED_BATCH):
        chunk = found[start : start + EMBED_BATCH]
        kept, vectors = images.of([p for p, _ in chunk], "train_captioner")  # the name an unreadable image is rejected under
        by_pair = {id(p): v for p, v in zip(kept, vectors)}
        for pair, example in chunk:
            if id(pair) in by_pair:
                examples.append(example)
                rows.append(by_pair[id(pair)])
            else:
                reject = pair.reject
                skipped.append({"image_id": pair.image_id, "reason": reject.reason if reject else "unreadable_image", "detail": reject.detail if reject else ""})
        bar.update(len(chunk))
    bar.close()
    embeddings = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 1), np.float32)
    return TrainingSet(examples, embeddings, skipped)
