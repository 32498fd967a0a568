"""Fixtures are generated here, small and offline: real photos from scikit-image's wheel,
plus the broken and unusual files that web scrapes are full of."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _cache_outside_home(tmp_path_factory):
    """What runs would keep in ~/.cache/recaption (ONNX exports, image embeddings) goes to a
    folder of this test session's, which the CLI runs the tests start inherit."""
    import os

    if "RECAPTION_CACHE" not in os.environ:
        os.environ["RECAPTION_CACHE"] = str(tmp_path_factory.mktemp("recaption-cache"))
    yield


def photo(name: str = "chelsea", size: tuple[int, int] | None = None) -> Image.Image:
    from skimage import data

    img = Image.fromarray(getattr(data, name)())
    return img.resize(size) if size else img


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A distinct image per seed (smooth blobs, so that JPEG and phash treat it like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def make_pairs_dataset(folder: Path, n: int, texts: list[str] | None = None) -> Path:
    """``n`` distinct small JPEGs with alt-texts, as the seed JSONL schema."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        noise_image(i).save(folder / "images" / f"{i:05d}.jpg", quality=90)
        text = texts[i % len(texts)] if texts else f"photo number {i} of a colourful pattern, IMG_{1000 + i}.JPG"
        records.append({"image_id": f"img-{i:05d}", "image_path": f"images/{i:05d}.jpg", "texts": [text], "quality_score": 0.5})
    return write_jsonl(folder / "pairs.jsonl", records)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recaption.demo import build_demo

    return build_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random CLIP saved as a checkpoint folder (see tests/tiny_models.py)."""
    pytest.importorskip("transformers")
    from tests.tiny_models import make_clip

    return make_clip(tmp_path_factory.mktemp("models") / "clip")


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random checkpoint folder per captioner family (see tests/tiny_models.py)."""
    pytest.importorskip("transformers")
    from tests import tiny_models

    root = tmp_path_factory.mktemp("vlms")
    return {
        "blip-2": tiny_models.make_blip2(root / "blip2"),
        "llava": tiny_models.make_llava(root / "llava"),
        "llava_next": tiny_models.make_llava(root / "llava_next", next_=True),
        "qwen2_vl": tiny_models.make_qwen2_vl(root / "qwen2_vl"),
    }


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random OPT causal LM, the captioner's decoder family (see tests/tiny_models.py)."""
    pytest.importorskip("transformers")
    from tests.tiny_models import make_opt

    return make_opt(tmp_path_factory.mktemp("models") / "opt")


def image_pairs(folder: Path, texts: list[list[str]], size: tuple[int, int] = (96, 80), id_format: str = "img-{i}", **fields: list) -> Path:
    """``folder/pairs.jsonl`` in the seed schema with one generated JPEG per record in
    ``folder/images``; ``fields`` add a value per record (e.g. ``references=[...]``)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, record_texts in enumerate(texts):
        noise_image(i, size).save(folder / "images" / f"{i}.jpg")
        record = {"image_id": id_format.format(i=i), "image_path": f"images/{i}.jpg", "texts": record_texts}
        records.append({**record, **{k: v[i] for k, v in fields.items()}})
    return write_jsonl(folder / "pairs.jsonl", records)


def captioner_data(folder: Path, n: int = 24) -> Path:
    """Pairs whose alt-texts a tiny captioner can learn: the image's number, in words."""
    return image_pairs(folder, [[f"a photo of a cat on a sofa {i}", f"cat {i}"] for i in range(n)])


def captioner_config(folder: Path, clip: Path, opt: Path, **overrides: object) -> Path:
    import yaml

    config = {
        "name": "tiny", "data": str(captioner_data(folder)), "output": str(folder / "run"), "cache": str(folder / "cache"),
        "model": {"encoder": str(clip), "decoder": str(opt), "visual_tokens": 4, "mapper_layers": 2, "mapper_heads": 2, "max_alt_tokens": 12, "max_caption_tokens": 16},
        "steps": 40, "batch_size": 8, "warmup": 4, "lr": 3e-3, "save_every": 15, "log_every": 1,
    }
    config.update(overrides)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_captioner(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path, tiny_opt: Path) -> Path:
    """The training output folder of a captioner trained for a few steps on ``captioner_data``."""
    from recaption.train.config import load_train_config
    from recaption.train.loop import train_captioner

    folder = tmp_path_factory.mktemp("captioner")
    train_captioner(load_train_config(captioner_config(folder, tiny_clip, tiny_opt)), progress=False)
    return folder / "run"


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A plain (ustar) tar of ``(name, bytes)`` members, in order."""
    import tarfile  # noqa: PLC0415

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def with_lying_header(members: list[tuple[str, bytes]], liar: int, swallow: int = 0, extra: int = 0) -> bytes:
    """``tar_bytes(members)`` where member ``liar``'s header claims the ``swallow`` members after
    it as its own bytes (and ``extra`` bytes more), its checksum made good: tarfile trusts it."""
    blob = bytearray(tar_bytes(members))
    starts, at = [], 0
    for _, data in members:
        starts.append(at)
        at += 512 + -(-len(data) // 512) * 512
    start = starts[liar]
    claimed = len(members[liar][1]) + extra
    if swallow:
        claimed = starts[liar + swallow + 1] - start - 512 + extra
    blob[start + 124 : start + 136] = f"{claimed:011o}\0".encode()
    blob[start + 148 : start + 156] = b" " * 8
    blob[start + 148 : start + 156] = f"{sum(blob[start : start + 512]):06o}\0 ".encode()
    return bytes(blob)


def run_locally(config, workers: int | None = None) -> dict:
    """A run on the local executor (``config.workers`` processes), no progress bar; its stats."""
    from recaption.runners.driver import RunDriver
    from recaption.runners.local import LocalExecutor

    return RunDriver(config, LocalExecutor(workers or config.workers), show_progress=False).run()


def run_on_ray(config, address: str | None = None) -> dict:
    """A run on the Ray executor, no progress bar; its stats."""
    from recaption.runners.driver import RunDriver
    from recaption.runners.ray_data import RayExecutor

    return RunDriver(config, RayExecutor(address), show_progress=False).run()
