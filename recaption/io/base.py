"""What every reader and writer shares: options, shards, the format registry, atomic files.

A reader first *plans* its input into shards (cheaply: a byte-offset scan, a file list),
then reads one shard at a time. The shard is the unit of parallelism and of resume: the
plan is saved with the run, so a re-run sees exactly the same shards.

A record that cannot be parsed is never dropped: the reader yields a Pair already
rejected at stage ``read`` with the reason, so it lands in the rejects output.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recaption.errors import UsageError
from recaption.imaging import is_url
from recaption.io.input_tree import OUTSIDE_INPUT, InputTree
from recaption.io.run_folder import BOOKKEEPING
from recaption.record import Pair

READ_STAGE = "read"
SKIPPED_FOLDERS = BOOKKEEPING  # a run's own bookkeeping, never input
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Field names tried in order when the user did not map a column.
ID_FIELDS = ("image_id", "key", "id", "uid")
IMAGE_PATH_FIELDS = ("image_path", "path", "file_name", "filename", "image_file")
IMAGE_BYTES_FIELDS = ("image", "jpg", "png", "webp", "image_bytes")
TEXT_FIELDS = ("texts", "text", "caption", "captions", "alt_text", "alt", "TEXT")
URL_FIELDS = ("url", "image_url", "URL")


class InputError(UsageError):
    """The input as a whole cannot be read (no such path, unknown format, bad schema)."""


@dataclass
class ReaderOptions:
    image_root: str | None = None
    text_field: str | None = None
    id_field: str | None = None
    image_field: str | None = None
    shard_size: int = 1000  # records per shard where the input has no natural shards
    allow_outside_input: bool = False  # image paths may lead outside the input's tree (io.input_tree)


@dataclass
class InputShard:
    index: int
    name: str  # "part-00000": also the name of the output files for this shard
    spec: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


class Reader(ABC):
    format: str = ""

    def __init__(self, path: str | os.PathLike[str], options: ReaderOptions | None = None) -> None:
        self.path = Path(path).resolve()
        self.options = options or ReaderOptions()
        if not self.path.exists():
            raise InputError(f"input {path} does not exist")
        self.tree = InputTree.of_input(self.path, self.options.image_root, self.options.allow_outside_input)

    def input_files(self, pattern: str, what: str) -> list[Path]:
        """The input file itself, or the files below the input folder that match ``pattern``.

        Skips a run's own ``rejects/`` and ``_work/`` folders, so pointing at an earlier
        OUTPUT reads its kept pairs only.
        """
        if not self.path.is_dir():
            return [self.path]
        found = sorted(p for p in self.path.rglob(pattern) if p.is_file() and not SKIPPED_FOLDERS & set(p.relative_to(self.path).parts))
        if not found:
            raise InputError(f"{self.path} holds no {what}")
        return found

    @abstractmethod
    def plan(self) -> list[InputShard]:
        """Split the input into shards, deterministically."""

    @abstractmethod
    def read(self, shard: InputShard) -> Iterator[Pair]:
        """Yield the shard's records in order, broken ones already rejected."""

    def pairs(self, shard: InputShard) -> Iterator[Pair]:
        """``read``, with every image path checked against the input's tree: the one place a
        path from the data enters a run, whatever the format (``io.input_tree``)."""
        for pair in self.read(shard):
            image = pair.image
            if pair.reject is None and isinstance(image, str) and image and not is_url(image):
                why = self.tree.refusal(image)
                if why is not None:
                    pair.reject_with(READ_STAGE, OUTSIDE_INPUT, why)
            yield pair


class Writer(ABC):
    format: str = ""
    # The file or folder name a shard's data takes inside OUTPUT/data/.
    suffix: str = ""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)

    def target(self, shard: str) -> Path:
        return self.out_dir / f"{shard}{self.suffix}"

    @abstractmethod
    def open_shard(self, shard: str) -> AbstractContextManager[Callable[[Pair], None]]:
        """A context whose value adds one pair; the shard appears, whole, only when it exits cleanly."""

    def finish_dataset(self) -> list[str]:
        """Called once every shard is written: a format whose files must agree (one schema)
        makes them agree here. Returns notes for the user on what the output cannot do."""
        return []

    def write(self, shard: str, pairs: list[Pair]) -> Path:
        with self.open_shard(shard) as add:
            for pair in pairs:
                add(pair)
        return self.target(shard)


READERS: dict[str, type[Reader]] = {}
WRITERS: dict[str, type[Writer]] = {}


def register_reader(cls: type[Reader]) -> type[Reader]:
    READERS[cls.format] = cls
    return cls


def register_writer(cls: type[Writer]) -> type[Writer]:
    WRITERS[cls.format] = cls
    return cls


# --- small shared pieces -----------------------------------------------------------------


_SAFE_KEY = re.compile(r"[^A-Za-z0-9_-]+")
SAFE_EXT = re.compile(r"[a-z0-9]{1,8}")  # an extension that may go into an output file name


def safe_ext(ext: str | None) -> str:
    """An image file extension fit for an output file name (input-derived, so never trusted)."""
    ext = (ext or "").lower()
    if ext == "jpeg":
        return "jpg"
    return ext if SAFE_EXT.fullmatch(ext) else "jpg"


def safe_key(image_id: str, row: int, used: set[str]) -> str:
    """A file-system and WebDataset-safe key (no dots, no slashes), unique within a shard.

    The id itself when it is already safe and new in this shard (so img2dataset's keys
    survive a round trip); otherwise the row number and what is safe of the id.
    """
    cleaned = _SAFE_KEY.sub("_", image_id).strip("_")[:80]
    key = cleaned if cleaned and cleaned == image_id and cleaned not in used else (f"{row:06d}_{cleaned}" if cleaned else f"{row:06d}")
    while key in used:  # an id that happens to look like another row's fallback key
        key += "_"
    used.add(key)
    return key


def unsafe_member_reason(name: str) -> str | None:
    """Why a tar member name must not be trusted, or None if it is fine."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        return "'..' in path"
    if any(ord(ch) < 32 for ch in name):
        return "control character in name"
    return None


def first_present(record: dict[str, Any], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    if wanted:
        return wanted if wanted in record else None
    for name in candidates:
        if name in record and record[name] is not None:
            return name
    return None


def texts_from(value: Any) -> list[str] | str:
    """Normalise a text field to a list of strings, or return why it cannot be."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return list(value)
        return f"texts holds non-strings: {[type(v).__name__ for v in value][:5]}"
    return f"texts is a {type(value).__name__}, not a string or a list of strings"


def broken_pair(image_id: str, reason: str, detail: str, origin: dict[str, Any]) -> Pair:
    pair = Pair(image_id=image_id, image=None, origin=origin)
    pair.reject_with(READ_STAGE, reason, detail)
    return pair
