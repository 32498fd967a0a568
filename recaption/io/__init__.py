"""Readers and writers, one module per format, and the detection of an input's format.

Every module of this package is imported here, so a format registers itself by being a file
in it (``@register_reader`` / ``@register_writer``): a new format is one new module.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from recaption.io.base import READERS, WRITERS, InputError, Reader, ReaderOptions, Writer

for _module in pkgutil.iter_modules(__path__):  # sorted by name: the registries' order is stable
    importlib.import_module(f"{__name__}.{_module.name}")

from recaption.io import img2dataset  # noqa: E402 - after the formats registered themselves
from recaption.io.img2dataset import looks_like_img2dataset  # noqa: E402
from recaption.io.input_tree import OUTSIDE_INPUT  # noqa: E402
from recaption.io.run_folder import kept_data  # noqa: E402
from recaption.record import Pair  # noqa: E402

OUTPUT_FORMATS = tuple(WRITERS)


def detect_format(path: str | Path) -> str:
    """Guess the input format from the path; ``--format`` overrides this."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input {path} does not exist")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            return "jsonl"
        if suffix == ".parquet":
            return "parquet"
        if suffix == ".tar":
            return "webdataset"
        raise InputError(f"cannot tell the format of {p.name}; pass --format ({', '.join(READERS)})")
    if looks_like_img2dataset(p):
        return "img2dataset"
    for pattern, fmt in (("*.tar", "webdataset"), ("*.parquet", "parquet"), ("*.jsonl", "jsonl")):
        # A metadata.jsonl beside images is Hugging Face's imagefolder, not a JSONL input.
        if any(f.name != "metadata.jsonl" for f in p.glob(pattern)):
            return fmt
    return "imagefolder"


def open_reader(path: str | Path, fmt: str | None, options: ReaderOptions) -> Reader:
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise InputError(f"unknown input format {fmt!r}; known: {', '.join(READERS)}")
    return READERS[fmt](path, options)


def default_output_format(reader: Reader) -> str:
    """Output keeps the input's format; img2dataset output keeps its inner layout."""
    if isinstance(reader, img2dataset.Img2DatasetReader):
        return reader.output_format
    return reader.format


def open_writer(fmt: str, out_dir: str | Path, embed_images: bool = False) -> Writer:
    if fmt not in WRITERS:
        raise InputError(f"unknown output format {fmt!r}; known: {', '.join(WRITERS)}")
    if embed_images:
        if fmt != "parquet":
            raise InputError(f"--embed-images is for Parquet output ({fmt} output {EMBEDS.get(fmt, 'keeps image paths')}); add --output-format parquet")
        return WRITERS[fmt](out_dir, embed_images=True)
    return WRITERS[fmt](out_dir)


# What each other output format does with images, for the --embed-images message.
EMBEDS = {"webdataset": "holds every image already", "imagefolder": "holds every image already", "jsonl": "keeps image paths"}


def read_kept_pairs(path: str | Path, fmt: str | None, options: ReaderOptions, refused: list[Pair] | None = None) -> tuple[list[Pair], int]:
    """Every pair of a (small enough) dataset in memory: the kept ones, and how many records
    came in rejected (left out). A run's output folder reads as its ``data/``. For
    whole-dataset tools: eval, audit sampling, export. ``refused`` collects the records whose
    image path the input's tree refused (``io.input_tree``), for a tool that lists them."""
    reader = open_reader(kept_data(path), fmt, options)
    pairs, rejected = [], 0
    for shard in reader.plan():
        for pair in reader.pairs(shard):
            if pair.reject is None:
                pairs.append(pair)
            else:
                rejected += 1
                if refused is not None and pair.reject.reason == OUTSIDE_INPUT:
                    refused.append(pair)
    return pairs, rejected
