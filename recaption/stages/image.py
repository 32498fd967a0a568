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
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recaption.imaging import ImageFileError, read_image_file, to_rgb
from recaption.io.input_tree import is_url
from recaption.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from recaption.record import Pair
from recaption.stages.base import Stage, StageError, register

RESIZE_MODES = ("none", "keep_ratio", "center_crop", "border")
# Formats that training loaders read everywhere; anything else is re-encoded to JPEG.
PASS_THROUGH_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_EXIF_ORIENTATION = 0x0112


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / n)


_DCT32 = _dct_matrix(32)


def thumbnail32(img: Image.Image) -> Image.Image:
    # Shrink first, then drop colour: converting the full-size image to grey costs more
    # than the whole box-reduce of the colour image.
    return img.resize((32, 32), Image.Resampling.BILINEAR, reducing_gap=2.0)


def perceptual_hash(img: Image.Image, small: Image.Image | None = None) -> str:
    """64-bit DCT hash (the pHash of imagehash): low 8x8 frequencies against their median."""
    return perceptual_hashes(img, small)[0]


# Mirroring an image left to right flips the sign of every DCT coefficient of odd horizontal
# frequency: the mirror's hash comes from the same transform, with no second thumbnail.
_MIRROR_SIGNS = np.array([(-1.0) ** v for v in range(8)])[None, :]


def perceptual_hashes(img: Image.Image, small: Image.Image | None = None) -> tuple[str, str]:
    """The image's perceptual hash and its left-right mirror's (for dedup: a flipped copy's
    hash is near the original's mirror hash)."""
    pixels = np.asarray((small or thumbnail32(img)).convert("L"), dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8]
    return _bits_of(low), _bits_of(low * _MIRROR_SIGNS)


# The windows whose hashes stand beside the whole image's, so that a copy cropped a little,
# or given a border, is near one of them: the centre 90 %, and the image less 5 % on one
# side or at one corner (left, top, right, bottom fractions cut away).
CROP_WINDOWS = ((0.05, 0.05, 0.05, 0.05), (0.05, 0, 0, 0), (0, 0.05, 0, 0), (0, 0, 0.05, 0), (0, 0, 0, 0.05),
                (0.05, 0.05, 0, 0), (0, 0.05, 0.05, 0), (0, 0, 0.05, 0.05), (0.05, 0, 0, 0.05))


BORDER_TOLERANCE = 24  # a pixel this close (max over channels) to the corner's colour is border


def trim_border(img: Image.Image) -> Image.Image | None:
    """The image less a uniform frame (a border a copy was given), or None where it has none:
    one colour at least 2 % deep on all four sides, leaving at least half of the image. (A dark
    edge on one or two sides is common in photos, and trimming it would make a photo's copies
    hash apart: a re-encoded copy moves the edge by a pixel.)"""
    pixels = np.asarray(img.convert("RGB"), dtype=np.int16)
    content = np.abs(pixels - pixels[0, 0]).max(axis=2) > BORDER_TOLERANCE
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if not len(rows):
        return None  # all one colour
    h, w = content.shape
    top, bottom, left, right = rows[0], h - 1 - rows[-1], cols[0], w - 1 - cols[-1]
    if min(top / h, bottom / h, left / w, right / w) < 0.02:
        return None
    box = (int(left), int(top), int(w - right), int(h - bottom))
    if (box[2] - box[0]) * (box[3] - box[1]) < 0.5 * w * h:
        return None
    return img.crop(box)


def image_hashes(img: Image.Image, small: Image.Image | None = None, windows: bool = True) -> tuple[str, str, list[str] | None]:
    """The hashes dedup compares: the whole image's, its mirror's and (``windows``) its crop windows'.

    An image with a uniform frame is hashed without it: a copy given a border then hashes like
    its original, and the frame (the same dark or white edges on every framed image) does not
    make framed images look alike, nor like photos with dark edges.
    """
    base = img if max(img.size) <= 128 else img.resize((128, 128), Image.Resampling.BILINEAR, reducing_gap=2.0)
    trimmed = trim_border(base)
    if trimmed is not None:
        base, small = trimmed, None
    phash, mirror = perceptual_hashes(base, small)
    return phash, mirror, window_hashes(base) if windows else None


def window_hashes(base: Image.Image) -> list[str]:
    """The perceptual hashes of ``CROP_WINDOWS`` of the image (give it a 128-px copy: cheap)."""
    w, h = base.size
    hashes = []
    for left, top, right, bottom in CROP_WINDOWS:
        window = base.crop((round(w * left), round(h * top), w - round(w * right), h - round(h * bottom)))
        hashes.append(perceptual_hash(window))
    return hashes


def _bits_of(low: np.ndarray) -> str:
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


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


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright), read from the header; broken EXIF counts as upright."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        return 1
    return value if value in range(1, 9) else 1


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
        data = self._read_bytes(pair)
        if data is None:
            return
        decoded = self._decode(pair, data)
        if decoded is None:
            return
        img, fmt, size, orientation, passes_through = decoded
        rewritten: list[str] = []
        original_mode = img.mode
        rgb = self._standardise(pair, img, orientation, rewritten)
        if rgb is None:
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

    def _decode(self, pair: Pair, data: bytes) -> tuple[Image.Image, str, tuple[int, int], int, bool] | None:
        """(image, format, size, EXIF orientation, passes through untouched), fully decoded (at
        1/8 scale for a JPEG that will not be re-encoded); None where the pair is rejected."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
                fmt = img.format or "unknown"
                w, h = img.size
                if w * h > self.max_pixels:
                    pair.reject_with(self.name, "decompression_bomb", f"{w}x{h} = {w * h} pixels > {self.max_pixels}")
                    return None
                if w == 0 or h == 0:
                    pair.reject_with(self.name, "empty_image", f"{w}x{h}")
                    return None
                orientation = _orientation(img)
                passes_through = fmt == "JPEG" and img.mode == "RGB" and orientation == 1 and self.resize == "none"
                if passes_through:
                    # An image that will not be re-encoded needs its pixels only for the hash.
                    # libjpeg still entropy-decodes every byte (so truncation and corruption show
                    # exactly as in a full decode) but makes pixels at 1/8 scale: block averages,
                    # just what a perceptual hash wants, at a fraction of the decode time.
                    img.draft("RGB", (max(w // 8, 32), max(h // 8, 32)))
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            pair.reject_with(self.name, "decompression_bomb", str(exc)[:200])
            return None
        except UnidentifiedImageError:
            pair.reject_with(self.name, "not_an_image", f"{len(data)} bytes that no image decoder recognises")
            return None
        except (OSError, SyntaxError, ValueError) as exc:  # PIL signals truncation as OSError
            reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
            pair.reject_with(self.name, reason, str(exc)[:200])
            return None
        return img, fmt, (w, h), orientation, passes_through

    def _standardise(self, pair: Pair, img: Image.Image, orientation: int, rewritten: list[str]) -> Image.Image | None:
        """Upright 8-bit RGB (alpha on ``background``); what changed goes into ``rewritten``."""
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
            rewritten.append(f"exif_orientation_{orientation}")
        original_mode = img.mode
        try:
            rgb = to_rgb(img, self.background)  # type: ignore[arg-type]
        except (OSError, ValueError) as exc:
            pair.reject_with(self.name, "unsupported_mode", f"mode {original_mode}: {exc}"[:200])
            return None
        if original_mode != "RGB":
            rewritten.append(f"mode_{original_mode}")
        return rgb

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

    def _read_bytes(self, pair: Pair) -> bytes | None:
        src = pair.image
        if isinstance(src, (bytes, bytearray)):
            data = bytes(src)
        elif not src:
            pair.reject_with(self.name, "no_image", "the record names no image")
            return None
        elif is_url(src):  # never a file, whatever follows the "://"
            pair.reject_with(self.name, "not_downloaded", f"{src[:200]}: download images first (img2dataset)")
            return None
        else:
            try:
                data = read_image_file(src, self.max_bytes)
            except ImageFileError as exc:
                pair.reject_with(self.name, exc.reason, str(exc))
                return None
        if not data:
            pair.reject_with(self.name, "zero_bytes", "the image file is empty")
            return None
        if len(data) > self.max_bytes:
            pair.reject_with(self.name, "too_many_bytes", f"{len(data)} bytes > {self.max_bytes}")
            return None
        return data
