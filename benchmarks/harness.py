"""The benchmark harness: generated workloads, the machine description, timed CLI runs."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"


def machine() -> str:
    cpus = len(__import__("os").sched_getaffinity(0))
    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()}, {cpus} CPU cores{mem}, Python {platform.python_version()}, {platform.system()}"


def real_size_jpegs(folder: Path, n: int, size: tuple[int, int] = (1024, 768)) -> Path:
    """``n`` distinct photo-like JPEGs: random crops, flips and tints of scikit-image's photos."""
    from skimage import data

    manifest = folder / "pairs.jsonl"
    if manifest.exists() and sum(1 for _ in open(manifest)) == n:
        return manifest
    (folder / "images").mkdir(parents=True, exist_ok=True)
    sources = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")]
    rng = np.random.default_rng(0)
    with open(manifest, "w") as fh:
        for i in range(n):
            src = sources[i % len(sources)]
            scale = rng.uniform(2.2, 3.0)
            big = src.resize((int(src.width * scale), int(src.height * scale)), Image.Resampling.BILINEAR)
            x = int(rng.integers(0, max(1, big.width - size[0])))
            y = int(rng.integers(0, max(1, big.height - size[1])))
            img = big.crop((x, y, x + size[0], y + size[1]))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            tint = np.asarray(img, dtype=np.float32) * rng.uniform(0.8, 1.2, 3)
            Image.fromarray(np.clip(tint, 0, 255).astype(np.uint8)).save(folder / "images" / f"{i:06d}.jpg", quality=90)
            text = f"Photo {i} of a scene, IMG_{i:04d}.JPG &amp; more #photo https://example.com/{i}"
            fh.write(json.dumps({"image_id": f"p{i:06d}", "image_path": f"images/{i:06d}.jpg", "texts": [text]}) + "\n")
    return manifest


VOCABULARY = (
    "red blue green yellow black white small large old new wooden metal glass stone bright dark "
    "cat dog horse bird car bike boat train house bridge tree flower river mountain beach street "
    "city garden kitchen table chair window door lamp book cup plate bottle phone camera hat shoe "
    "on under near beside behind in front of with and at during morning evening night summer winter"
).split()


def small_jpegs(folder: Path, n: int) -> Path:
    """``n`` distinct small JPEGs (smooth random blobs), cheap to make by the ten thousand."""
    manifest = folder / "pairs.jsonl"
    if manifest.exists() and sum(1 for _ in open(manifest)) == n:
        return manifest
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with open(manifest, "w") as fh:
        for i in range(n):
            blob = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            path = folder / "images" / f"{i:06d}.jpg"
            if not path.exists():  # images are kept between runs; only the texts may change
                Image.fromarray(blob).resize((128, 96), Image.Resampling.BICUBIC).save(path, quality=85)
            words = " ".join(VOCABULARY[k] for k in rng.integers(0, len(VOCABULARY), 6))
            fh.write(json.dumps({"image_id": f"s{i:06d}", "image_path": f"images/{i:06d}.jpg", "texts": [f"{words}, DSC_{i:04d}"]}) + "\n")
    return manifest


_MEASURE = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run_cli(*args: str) -> tuple[float, int]:
    """Run ``recaption`` in a fresh child; return (wall seconds, peak RSS in MiB of its largest process)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "recaption.cli", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    return seconds, int(done.stdout.strip().splitlines()[-1]) // 1024
