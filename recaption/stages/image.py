"""Image check and standardisation.

Every image is decoded in full once (a truncated file only shows itself when the last
bytes are read), checked against the pixel limit before decoding (decompression bombs),
turned upright (EXIF orientation), converted to 8-bit RGB (CMYK, palette, alpha on white,
16-bit, grayscale), filtered by size and aspect ratio, optionally resized, and described by
width, height, format, sha256 and a perceptual hash. The image is re-encoded only when
something about it changed; otherwise the original bytes or path travel on untouched.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
from PIL import Image

from recaption.dedup.image_hashes import image_hashes, thumbnail32
from recaption.imaging import ImageFileError, decode_checked, record_image_bytes, upright_rgb
from recaption.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from recaption.record import Pair
from recaption.stages.base import Stage, StageError, register

RESIZE_MODES = ("none", "keep_ratio", "center_crop", "border")
# Formats that training loaders read everywhere; anything else is re-encoded to JPEG.
PASS_THROUGH_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def look_scores(small: Image.Image) -> dict[str, float]:
    """Cheap evidence about the look of an image, from its 32x32 thumbnail.

    ``colourfulness``: mean spread between the RGB channels (0 for grey images, whatever
    their mode); ``white_border``: share of the outer ring of pixels that is near white
    (high for product shots on white and for scans). ``flat_share`` (see there) comes from a
    larger thumbnail.
    """
    px = np.asarray(small.convert("RGB"), dtype=np.int16)
    spread = px.max(axis=2) - px.min(axis=2)
    ring = np.concatenate([px[:2].reshape(-1, 3), px[-2:].reshape(-1, 3), px[2:-2, :2].reshape(-1, 3), px[2:-2, -2:].reshape(-1, 3)])
    return {"colourfulness": round(float(spread.mean()), 2), "white_border": round(float((ring.min(axis=1) > 235).mean()), 3)}


FLAT_STEP = 6  # summed RGB difference to the right and lower neighbours at or below which a pixel is flat


def flat_share(img: Image.Image) -> float:
    """Share of flat pixels on a 64x64 thumbnail: logos and flat-colour graphics are mostly
    flat (0.47 for scikit-image's logo), most photos are not (under 0.1 for its colour photos),
    but a large clear sky is (0.37 for its rocket), so the caption writer asks for a white
    border as well before it calls an image a graphic."""
    px = np.asarray(img.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0).convert("RGB"), dtype=np.int16)
    step = np.abs(np.diff(px, axis=1)).sum(axis=2)[:-1, :] + np.abs(np.diff(px, axis=0)).sum(axis=2)[:, :-1]
    return round(float((step <= FLAT_STEP).mean()), 3)


def _resize(img: Image.Image, mode: str, size: int, only_if_bigger: bool, border: tuple[int, int, int]) -> Image.Image:
    w, h = img.size
    if mode == "border":
        scale = size / max(w, h)
    else:
        scale = size / min(w, h)
    if only_if_bigger and scale >= 1.0:
        scale = 1.0
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if mode == "center_crop" and (nw > size or nh > size):
        left, top = (nw - min(nw, size)) // 2, (nh - min(nh, size)) // 2
        img = img.crop((left, top, left + min(nw, size), top + min(nh, size)))
    elif mode == "border" and (nw, nh) != (size, size):
        canvas = Image.new("RGB", (size, size), border)
        canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
        img = canvas
    return img


@register
class ImageCheck(Stage):
    """Validate, standardise and describe each image."""

    name = "image_check"
    provides = ("image:checked", "score:bytes", "score:sha256", "score:width", "score:height", "score:aspect_ratio",
                "score:colourfulness", "score:white_border", "score:flat_share", "score:phash", "score:phash_mirror", "score:phash_windows")
    batch_size = 32

    def __init__(
        self,
        *,
        max_pixels: int = MAX_IMAGE_PIXELS,
        max_bytes: int = MAX_IMAGE_BYTES,
        min_side: int = 64,
        max_aspect_ratio: float = 3.0,
        resize: str = "none",
        size: int = 512,
        resize_only_if_bigger: bool = True,
        background: list[int] | tuple[int, int, int] = (255, 255, 255),
        border_color: list[int] | tuple[int, int, int] = (0, 0, 0),
        jpeg_quality: int = 95,
        phash: bool = True,
        crop_windows: bool | None = None,
        keep_formats: list[str] | tuple[str, ...] = tuple(PASS_THROUGH_FORMATS),
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise StageError(f"image_check.resize must be one of {RESIZE_MODES}, not {resize!r}")
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.min_side = min_side
        self.max_aspect_ratio = max_aspect_ratio
        self.resize = resize
        self.size = size
        self.resize_only_if_bigger = resize_only_if_bigger
        self.background = tuple(background)
        self.border_color = tuple(border_color)
        self.jpeg_quality = jpeg_quality
        self.phash = phash
        # The crop windows' hashes (``dedup: {near_crops: true}`` compares them) cost 1.2 ms an
        # image: unset, the recipe computes them only when a dedup stage of it compares them
        # (``Recipe.build``); a stage built on its own computes them.
        self.crop_windows = crop_windows
        if isinstance(keep_formats, str):
            keep_formats = [keep_formats]
        self.keep_formats = {"JPEG" if f.upper() == "JPG" else f.upper() for f in keep_formats}
        # Images in other formats are re-encoded as JPEG, which therefore always stays.
        if not self.keep_formats <= set(PASS_THROUGH_FORMATS) or "JPEG" not in self.keep_formats:
            raise StageError(f"image_check.keep_formats is JPEG and any of PNG, WEBP (others are re-encoded as JPEG), not {sorted(self.keep_formats)}")

    def process(self, batch: list[Pair]) -> None:
        for pair in batch:
            self._check_one(pair)

    # The checks in the order they run: read, decode, standardise, shape, describe, write.
    def _check_one(self, pair: Pair) -> None:
        try:
            data = record_image_bytes(pair.image, self.max_bytes)
            img, fmt, size, orientation, passes_through = decode_checked(data, self.max_pixels, may_draft=self.resize == "none")
            original_mode = img.mode
            rgb, rewritten = upright_rgb(img, orientation, self.background)  # type: ignore[arg-type]
        except ImageFileError as exc:
            pair.reject_with(self.name, exc.reason, str(exc))
            return
        w, h = size if passes_through else rgb.size  # a drafted JPEG's pixels are 1/8 scale; upright otherwise
        scores: dict[str, Any] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "width": w, "height": h}
        pair.meta.update({"image_format": fmt, "image_mode": original_mode})
        if getattr(img, "n_frames", 1) > 1:
            pair.meta["image_frames"] = img.n_frames
        if not self._shape_ok(pair, w, h, scores):
            return
        if self.resize != "none":
            resized = _resize(rgb, self.resize, self.size, self.resize_only_if_bigger, self.border_color)  # type: ignore[arg-type]
            if resized.size != rgb.size:
                rewritten.append(f"resize_{self.resize}")
                rgb = resized
                scores.update({"width": rgb.size[0], "height": rgb.size[1]})
        if fmt not in PASS_THROUGH_FORMATS or fmt not in self.keep_formats:
            rewritten.append(f"format_{fmt}")
        pair.scores.update(scores)
        pair.scores.update(self._describe(rgb))
        if rewritten:
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=self.jpeg_quality)
            pair.image, pair.image_ext = buf.getvalue(), "jpg"
            pair.meta["image_rewritten"] = rewritten
        elif isinstance(pair.image, (bytes, bytearray)):
            pair.image_ext = PASS_THROUGH_FORMATS[fmt]

    def _shape_ok(self, pair: Pair, w: int, h: int, scores: dict[str, Any]) -> bool:
        """The size and aspect checks; a refused pair keeps the scores made so far."""
        if min(w, h) < self.min_side:
            pair.scores.update(scores)
            pair.reject_with(self.name, "too_small", f"{w}x{h}, min side {self.min_side}")
            return False
        aspect = max(w, h) / min(w, h)
        scores["aspect_ratio"] = round(aspect, 4)
        if aspect > self.max_aspect_ratio:
            pair.scores.update(scores)
            pair.reject_with(self.name, "aspect_ratio", f"{w}x{h}, ratio {aspect:.2f} > {self.max_aspect_ratio}")
            return False
        return True

    def _describe(self, rgb: Image.Image) -> dict[str, Any]:
        """What the caption writer and dedup read of the image: its look, flat share and hash."""
        small = thumbnail32(rgb)
        found: dict[str, Any] = {**look_scores(small), "flat_share": flat_share(rgb)}
        if self.phash:
            found["phash"], found["phash_mirror"], windows = image_hashes(rgb, small, self.crop_windows is not False)
            if windows is not None:
                found["phash_windows"] = windows
        return found
