"""The demo dataset: real photos from scikit-image's wheel with messy web-style alt-text.

It holds what a scrape holds: clean pairs, alt-text full of file names, credits, URLs,
hashtags and emoji, captions far over CLIP's 77 tokens, resized and re-encoded copies of
the same photo, CMYK, palette, 16-bit and transparent images, an EXIF-rotated JPEG, and
broken records (truncated and empty files, a text file named .jpg, a missing file, a
decompression bomb, malformed JSON lines, a duplicate id, a wrong type, non-UTF-8 bytes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = {
    # skimage.data name -> messy alt-texts for it
    "astronaut": [
        "Smiling astronaut Eileen Collins with short brown hair, official NASA portrait photo by NASA, 1998 | IMG_2034.JPG",
        "Photo of astronaut in orange launch suit w/ american flag, credit: NASA https://www.nasa.gov/image.jpg",
    ],
    "chelsea": ["Chelsea the tabby cat 🐱🐱 lookin at u!!! #cat #caturday #catsofinstagram @kittyfan"],
    "coffee": [
        "Image may contain: cup of coffee, latte art on a saucer &amp; spoon | stock photo - Shutterstock",
    ],
    "rocket": [
        "SpaceX Falcon 9 rocket on the launch pad at Cape Canaveral on 2019-05-12 14:32 before the Starlink "
        "mission, with the service tower beside it, the fog over the Atlantic ocean in the morning light, "
        "the crowd of photographers at the fence, and the long exposure showing the lights of the pad. "
        "The Falcon 9 first stage landed on the drone ship Of Course I Still Love You eight minutes later. "
        "Launch Complex 40 has hosted more than 200 launches since 2010, including the CRS-20 cargo mission. "
        "Taken by our staff photographer with a Canon EOS R5 and a 100-400mm lens. More photos on our "
        "website www.launchphotos.example and follow us on Twitter for updates on future launches!!!",
    ],
    "coins": ["Greek coins from Pompeii, collection of the Brooklyn Museum DSC_0001"],
    "camera": ["cameraman standing on a lawn with a tripod, black and white 📷 | Photographed by J. Doe © 2004"],
    "hubble_deep_field": ["Hubble Deep Field galaxies, NASA/ESA - hubble_deep_field.jpg"],
    "moon": ["the surface of the moon close up,,, craters!!!"],
    "horse": ["horse silhouette"],
    "motorcycle_left": ["red Ducati motorcycle in a garage — call 555-123-4567 for details"],
    "immunohistochemistry": ["Immunohistochemical staining of colonic tissue, 40x microscope slide"],
    "retina": ["Fundus photograph of a healthy human retina, 2011-03-02"],
}


def _load(name: str) -> Image.Image:
    from skimage import data  # noqa: PLC0415 - a demo-only dependency

    arr = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
    if arr.dtype == bool:
        arr = (~arr).astype(np.uint8) * 255
    return Image.fromarray(arr)


def _save(img: Image.Image, path: Path, fmt: str, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kwargs)


def build_demo(folder: Path) -> Path:
    """Write ``folder/images/...`` and ``folder/pairs.jsonl``; return the JSONL's path."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines: list[str | bytes] = []

    def add(image_id: str, path: str, texts: object, **extra: object) -> None:
        lines.append(json.dumps({"image_id": image_id, "image_path": path, "texts": texts, **extra}, ensure_ascii=False))

    for i, (name, texts) in enumerate(PHOTOS.items()):
        img = _load(name)
        _save(img.convert("RGB") if img.mode not in ("RGB", "L") else img, images / f"{name}.jpg", "JPEG", quality=92)
        add(f"{name}", f"images/{name}.jpg", texts, quality_score=round(0.5 + 0.04 * i, 2))

    astronaut = _load("astronaut")
    chelsea = _load("chelsea")
    coffee = _load("coffee")
    # Copies: exact (same bytes), resized and re-encoded (near), a second scrape of a caption.
    (images / "astronaut_copy.jpg").write_bytes((images / "astronaut.jpg").read_bytes())
    add("astronaut-mirror", "images/astronaut_copy.jpg", ["NASA astronaut portrait (mirror site)"])
    _save(chelsea.resize((300, 225)), images / "chelsea_small.jpg", "JPEG", quality=70)
    add("chelsea-thumb", "images/chelsea_small.jpg", ["cat thumbnail 300px"])
    _save(coffee, images / "coffee_again.webp", "WEBP", quality=80)
    add("coffee-webp", "images/coffee_again.webp", ["Image may contain: cup of coffee, latte art on a saucer & spoon"])
    # Standardisation cases, each on a photo of its own so that they survive dedup.
    _save(coffee.crop((0, 0, 300, 400)).convert("CMYK"), images / "saucer_cmyk.jpg", "JPEG")
    add("saucer-cmyk", "images/saucer_cmyk.jpg", ["espresso cup on a saucer, print-ready CMYK file"])
    logo = _load("logo")  # RGBA with transparency
    _save(logo, images / "logo.png", "PNG")
    add("skimage-logo", "images/logo.png", ["scikit-image logo on transparent background"])
    _save(_load("page").quantize(16), images / "page_palette.gif", "GIF")
    add("page-gif", "images/page_palette.gif", ["scanned book page, old 16-colour GIF"])
    brick16 = Image.fromarray((np.asarray(_load("brick"), dtype=np.uint16) * 257).astype(np.uint16))
    _save(brick16, images / "brick16.png", "PNG")
    add("brick-16bit", "images/brick16.png", ["brick wall texture, 16-bit PNG"])
    rotated = astronaut.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": the camera stored it on its side
    _save(rotated, images / "astronaut_sideways.jpg", "JPEG", exif=exif.tobytes())
    add("astronaut-exif", "images/astronaut_sideways.jpg", ["astronaut portrait straight from the phone, IMG_0042.JPG"])
    # Same generic caption on different images: flagged, not dropped.
    _save(_load("rocket").crop((0, 0, 200, 300)), images / "rocket_top.jpg", "JPEG")
    add("generic-1", "images/rocket_top.jpg", ["outer space"])
    _save(_load("hubble_deep_field").crop((0, 0, 400, 400)), images / "galaxies.jpg", "JPEG")
    add("generic-2", "images/galaxies.jpg", ["Outer space!"])
    # Alt-text that says nothing about the image: the default recipe describes it from the
    # taggers instead (the clean recipe, which has none, rejects it).
    _save(_load("coffee").crop((100, 0, 500, 400)), images / "coffee_crop.jpg", "JPEG")
    add("says-nothing", "images/coffee_crop.jpg", ["Image!"])
    # Filters.
    _save(chelsea.resize((48, 36)), images / "tiny.jpg", "JPEG")
    add("tiny", "images/tiny.jpg", ["tiny cat icon"])
    _save(astronaut.crop((0, 200, 512, 300)), images / "banner.jpg", "JPEG")
    add("banner", "images/banner.jpg", ["website banner strip"])
    # Broken records.
    good = (images / "coffee.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(good[: len(good) // 3])
    add("truncated", "images/truncated.jpg", ["a coffee that never finished downloading"])
    (images / "empty.jpg").write_bytes(b"")
    add("empty", "images/empty.jpg", ["zero-byte file"])
    (images / "not_an_image.jpg").write_text("<html><body>404 Not Found</body></html>")
    add("html-404", "images/not_an_image.jpg", ["error page saved as jpg"])
    add("missing", "images/does_not_exist.jpg", ["the file was never downloaded"])
    bomb = Image.new("1", (12000, 10000))
    _save(bomb, images / "bomb.png", "PNG", optimize=True)
    add("bomb", "images/bomb.png", ["a tiny file that decodes to 120 megapixels"])
    add("only-junk", "images/horse.jpg", ["IMG_9921.JPG 2020-01-01 #nofilter"])
    add("chelsea", "images/chelsea_small.jpg", ["same id as an earlier record"])
    add("texts-not-a-list", "images/coffee.jpg", {"en": "a coffee"})
    lines.append('{"image_id": "half-a-line", "image_path": "images/coffee.jpg", "texts": ["unterminated')
    lines.append("this line is not JSON at all")
    lines.append(b'{"image_id": "latin1", "image_path": "images/coffee.jpg", "texts": ["caf\xe9 cr\xe8me"]}')

    manifest = folder / "pairs.jsonl"
    with open(manifest, "wb") as fh:
        for line in lines:
            fh.write((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n")
    return manifest
