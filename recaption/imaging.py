"""Reading and decoding images, shared by the image check, the model stages and the dedup index.

``record_image_bytes`` reads the image a record names (bytes, or a regular file within the
byte limit); ``decode_checked`` and ``upright_rgb`` are the image check's full decode (the
pixel limit before decoding, truncation shown, EXIF orientation, 8-bit RGB), each problem an
``ImageFileError`` whose ``reason`` is the reject reason.

``to_rgb`` is the one conversion every stage uses (alpha on a background, 16-bit scaled,
palette, CMYK). ``load_rgb`` decodes an image that already passed ``image_check`` for a
model that needs only ``min_side`` pixels: JPEGs are decoded at the smallest DCT scale
that is big enough, which is several times faster than a full decode. ``load_rgb_array``
gives the same pixels as an array, decoding JPEGs with libjpeg-turbo straight into it.
"""

from __future__ import annotations

import io
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recaption.record import Pair


class ImageFileError(OSError):
    """An image path that cannot be read as an image file; ``reason`` is the reject reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def is_url(image: str) -> bool:
    """An image named by a URL, never opened as a file (a path with "://" in it is no file
    either: nothing reads it)."""
    return "://" in image


def record_image_bytes(src: str | bytes | bytearray | None, max_bytes: int) -> bytes:
    """The bytes of the image a record names: its bytes, or a regular file's, never more than
    ``max_bytes``; a URL is never fetched here."""
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    elif not src:
        raise ImageFileError("no_image", "the record names no image")
    elif is_url(src):  # never a file, whatever follows the "://"
        raise ImageFileError("not_downloaded", f"{src[:200]}: download images first (img2dataset)")
    else:
        data = read_image_file(src, max_bytes)
    if not data:
        raise ImageFileError("zero_bytes", "the image file is empty")
    if len(data) > max_bytes:
        raise ImageFileError("too_many_bytes", f"{len(data)} bytes > {max_bytes}")
    return data


_EXIF_ORIENTATION = 0x0112


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright), read from the header; broken EXIF counts as upright."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        return 1
    return value if value in range(1, 9) else 1


def decode_checked(data: bytes, max_pixels: int, may_draft: bool) -> tuple[Image.Image, str, tuple[int, int], int, bool]:
    """(image, format, size, EXIF orientation, passes through untouched), fully decoded: at
    1/8 scale for an upright RGB JPEG where ``may_draft`` (it will not be re-encoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            w, h = img.size
            if w * h > max_pixels:
                raise ImageFileError("decompression_bomb", f"{w}x{h} = {w * h} pixels > {max_pixels}")
            if w == 0 or h == 0:
                raise ImageFileError("empty_image", f"{w}x{h}")
            orientation = exif_orientation(img)
            passes_through = fmt == "JPEG" and img.mode == "RGB" and orientation == 1 and may_draft
            if passes_through:
                # An image that will not be re-encoded needs its pixels only for the hash.
                # libjpeg still entropy-decodes every byte (so truncation and corruption show
                # exactly as in a full decode) but makes pixels at 1/8 scale: block averages,
                # just what a perceptual hash wants, at a fraction of the decode time.
                img.draft("RGB", (max(w // 8, 32), max(h // 8, 32)))
            img.load()
    except ImageFileError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFileError("decompression_bomb", str(exc)[:200]) from None
    except UnidentifiedImageError:
        raise ImageFileError("not_an_image", f"{len(data)} bytes that no image decoder recognises") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL signals truncation as OSError
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageFileError(reason, str(exc)[:200]) from None
    return img, fmt, (w, h), orientation, passes_through


def upright_rgb(img: Image.Image, orientation: int, background: tuple[int, int, int]) -> tuple[Image.Image, list[str]]:
    """Upright 8-bit RGB (alpha on ``background``), and what changed (``exif_orientation_N``, ``mode_M``)."""
    rewritten: list[str] = []
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
        rewritten.append(f"exif_orientation_{orientation}")
    original_mode = img.mode
    try:
        rgb = to_rgb(img, background)
    except (OSError, ValueError) as exc:
        raise ImageFileError("unsupported_mode", f"mode {original_mode}: {exc}"[:200]) from None
    if original_mode != "RGB":
        rewritten.append(f"mode_{original_mode}")
    return rgb, rewritten


def decode_for_model(batch: list[Pair], min_side: int, rejected_by: str) -> tuple[list[Pair], list[Image.Image]]:
    """Decode every pair's image for a model (RGB, at least ``min_side`` where JPEG draft
    decoding can shrink it); a pair whose image will not decode is rejected, as
    ``rejected_by/unreadable_image``. Returns the decoded pairs and their images."""
    pairs, images = [], []
    for pair in batch:
        try:
            images.append(load_rgb(pair.image, min_side))  # type: ignore[arg-type]
            pairs.append(pair)
        except (OSError, ValueError, SyntaxError) as exc:
            pair.reject_with(rejected_by, "unreadable_image", f"{type(exc).__name__}: {exc}"[:200])
    return pairs, images


def read_image_file(path: str, max_bytes: int) -> bytes:
    """The bytes of an image file: only a regular file, and never more than ``max_bytes``.

    A path may name a device (/dev/zero never ends), a FIFO (opening it waits for a writer
    that never comes: hence O_NONBLOCK), a folder, or a file that grows while it is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageFileError("missing_file", path) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte inside the path
        raise ImageFileError("unreadable_file", f"{path!r}: {getattr(exc, 'strerror', None) or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # checked before Python's file object, which refuses folders itself
        os.close(fd)
        raise ImageFileError("not_a_file", f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > max_bytes:
            raise ImageFileError("too_many_bytes", f"{info.st_size} bytes > {max_bytes}")
        try:
            # The size the file has, plus one byte to see it grow: read(max_bytes + 1) would
            # allocate max_bytes for every image, however small.
            data = fh.read(info.st_size + 1)
        except OSError as exc:
            raise ImageFileError("unreadable_file", f"{path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ImageFileError("too_many_bytes", f"more than {max_bytes} bytes")
    return data


# Magic numbers of the encoded image types recaption reads: (MIME type, file extension).
def image_type(head: bytes) -> tuple[str, str] | None:
    """The image type of encoded bytes from their first 16 bytes, or None: a file is an image
    by what it holds, never by its name."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "webp"
    if head[:4] == b"GIF8":
        return "image/gif", "gif"
    if head[:2] == b"BM" and len(head) >= 14:
        return "image/bmp", "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff", "tif"
    return None


def read_image_bytes(path: str, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of an image file to copy into an output, and its extension: a regular file
    (``read_image_file``) that is an image by its magic number. Whatever else a path names
    (a password file, a process's environment) is ImageFileError ``not_an_image``."""
    data = read_image_file(path, max_bytes)
    kind = image_type(data[:16])
    if kind is None:
        raise ImageFileError("not_an_image", f"{path[:200]!r} is not an image by its bytes")
    return data, kind[1]


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


def _draft_scale(width: int, height: int, min_side: int | None) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) that ``load_rgb``'s ``draft`` picks."""
    if not min_side:
        return 1
    scale = max(1.0, min(width, height) / min_side)
    want_w, want_h = max(1, int(width / scale)), max(1, int(height / scale))
    room = min(width // want_w, height // want_h)
    return next(s for s in (8, 4, 2, 1) if room >= s)


def load_rgb_array(image: str | bytes, min_side: int | None = None, any_scale: bool = False) -> np.ndarray:
    """``load_rgb`` as a uint8 array (H, W, 3), the same pixels.

    A JPEG (nearly every web image) is decoded by libjpeg-turbo directly into the array
    (simplejpeg), at the same DCT scale as ``load_rgb``: no PIL image and no copy of it in
    between, about twice as fast. CMYK, EXIF-rotated and damaged JPEGs and every other
    format go through ``load_rgb``. ``any_scale`` lets libjpeg-turbo pick any of its n/8
    scales (not only 1/2, 1/4, 1/8) for the smallest image whose short side is still at
    least ``min_side``: 288 px instead of 384 for a 768-px photo going to a 224-px model,
    which halves the resize after it; the pixels then differ from ``load_rgb``'s.
    """
    import simplejpeg  # noqa: PLC0415 - only the loaders decode this way

    data = bytes(image) if isinstance(image, (bytes, bytearray)) else None
    if data is None:
        with open(image, "rb") as fh:
            data = fh.read()
    if data[:3] == b"\xff\xd8\xff":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            with Image.open(io.BytesIO(data)) as img:  # the header only: is it rotated, is it CMYK
                upright = img.getexif().get(0x0112, 1) == 1 and img.mode in ("RGB", "L")
            if upright and any_scale and min_side:
                short = {"min_height": min_side} if height <= width else {"min_width": min_side}
                return simplejpeg.decode_jpeg(data, "RGB", **short)
            if upright:
                s = _draft_scale(width, height, min_side)
                return simplejpeg.decode_jpeg(data, "RGB", min_width=-(-width // s), min_height=-(-height // s))
        except (ValueError, OSError, SyntaxError):
            pass  # let PIL decide what is wrong with it, as everywhere else
    return np.asarray(load_rgb(data, min_side))


def to_bgr_array(image: Image.Image) -> np.ndarray:
    """Pixels in OpenCV's channel order, which the ONNX tools built on OpenCV expect."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def input_side(image_processor: object, default: int = 224) -> int:
    """The side a Hugging Face image processor resizes to (its crop, else its size): JPEGs for
    it need decoding no larger than this (``load_rgb(..., min_side)``)."""
    size = getattr(image_processor, "crop_size", None) or getattr(image_processor, "size", None) or {}
    return int(max([v for v in dict(size).values() if isinstance(v, int)] or [default]))
