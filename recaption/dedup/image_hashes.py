"""Perceptual hashes of an image, as dedup compares them: the whole image's 64-bit DCT hash,
its left-right mirror's, and its crop windows' (a copy cropped a little or given a border is
near one of them). The image check stores them on each record; the reference index computes
them for images no run checked; the dedup decision reads ``len(CROP_WINDOWS)`` hashes a record.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


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
