"""Where a review dataset's images live, and how they travel with it: the folders a dataset's
image paths may lead into (``image_roots``; for serving, ``recorded_roots``, which trusts no
recorded root outside the dataset's folder), and the images copied into a sample or a round
(``embed_images``), so that it is reviewed from its own folder and handed on whole. Audit
sampling, the review session and a round's export all use them."""

from __future__ import annotations

import json
from pathlib import Path

from recaption.imaging import ImageFileError, image_type, is_url, read_image_file
from recaption.io.run_folder import RunFolder, is_run_folder
from recaption.limits import MAX_IMAGE_BYTES
from recaption.record import Pair

# What a browser shows: the review server serves these types only.
SERVED_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")


def sniff_type(head: bytes) -> str | None:
    """The MIME type of encoded bytes the review page may show, from their magic number."""
    kind = image_type(head)
    return kind[0] if kind and kind[0] in SERVED_TYPES else None


def image_roots(dataset: Path, image_root: str | None = None) -> list[Path]:
    """Where a dataset's images may live: ``image_root`` if given; else the dataset's folder,
    and for a `recaption run` output folder also the folder of the run's own input."""
    if image_root:
        return [Path(image_root).resolve()]
    roots = [(dataset if dataset.is_dir() else dataset.parent).resolve()]
    stats = RunFolder(dataset).stats
    if is_run_folder(dataset) and stats.exists():
        source = Path(json.loads(stats.read_text()).get("input_path") or "")
        if str(source):
            roots.append((source if source.is_dir() else source.parent).resolve())
    return roots


def real_image(path: Path) -> tuple[bytes, str] | None:
    """A file's bytes and image type where it is a regular file that is an image by its bytes
    (not any file that is named .jpg); None otherwise."""
    try:
        data = read_image_file(str(path), MAX_IMAGE_BYTES)
    except ImageFileError:
        return None
    kind = sniff_type(data[:16])
    return (data, kind) if kind else None


def embed_images(pairs: list[Pair], roots: list[Path]) -> int:
    """Carry each pair's image (a real image file inside ``roots``) as bytes, so that the writer
    copies it into the dataset being written: a sample or a round then holds its own images, is
    reviewed without pointing the server outside its folder, and can be handed on whole."""
    n = 0
    for pair in pairs:
        image = pair.image
        if not isinstance(image, str) or is_url(image):
            continue
        path = Path(image).resolve()
        found = real_image(path) if any(root in path.parents for root in roots) else None
        if found is not None:
            pair.image, pair.image_ext = found[0], image_type(found[0][:16])[1]  # found: an image by its bytes
            n += 1
    return n


def recorded_roots(dataset: Path) -> tuple[list[Path], list[Path]]:
    """(the image roots to serve from, the ones refused). The roots a sample (``sample.json``),
    an exported round (``review.json``) or a run (its input folder) recorded are data, and data
    may be hostile (``image_roots: ["/"]``): only those inside the dataset's own folder are
    served. Others need ``--image-root`` on the command line."""
    folder = (dataset if dataset.is_dir() else dataset.parent).resolve()
    roots = image_roots(dataset)
    for name in ("sample.json", "review.json"):
        if (folder / name).exists():
            try:
                recorded = json.loads((folder / name).read_text(encoding="utf-8")).get("image_roots")
            except (ValueError, AttributeError, OSError):
                recorded = None
            if isinstance(recorded, list) and recorded:
                roots = [Path(str(r)).resolve() for r in recorded]
                break
    inside = [r for r in roots if r == folder or folder in r.parents]
    return inside or [folder], [r for r in roots if r not in inside]
