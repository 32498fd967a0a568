"""Decoding images to RGB pixels, shared by the image check and the model stages.

``to_rgb`` is the one conversion every stage uses (alpha on a background, 16-bit scaled,
palette, CMYK). ``load_rgb`` decodes an image that already passed ``image_check`` for a
model that needs only ``min_side`` pixels: JPEGs are decoded at the smallest DCT scale
that is big enough, which is several times faster than a full decode.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """8-bit RGB from any mode: alpha composited on ``background``, 16-bit and float scaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr, top = arr - lo, max(hi - lo, 1e-12)
        arr8 = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(image: str | bytes, min_side: int | None = None, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Upright 8-bit RGB pixels of an image path or bytes, at least ``min_side`` on the short side."""
    src = io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else image
    with Image.open(src) as img:
        if min_side and img.format == "JPEG":
            w, h = img.size
            scale = max(1.0, min(w, h) / min_side)
            img.draft("RGB", (int(w / scale), int(h / scale)))
        # exif_transpose returns a loaded copy, so the pixels outlive the open file.
        return to_rgb(ImageOps.exif_transpose(img), background)


def to_bgr_array(image: Image.Image) -> np.ndarray:
    """Pixels in OpenCV's channel order, which the ONNX tools built on OpenCV expect."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def input_side(image_processor: object, default: int = 224) -> int:
    """The side a Hugging Face image processor resizes to (its crop, else its size): JPEGs for
    it need decoding no larger than this (``load_rgb(..., min_side)``)."""
    size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
    return int(max([v for v in dict(size).values() if isinstance(v, int)] or [default]))
