"""An image folder with sidecar ``.txt`` captions (the diffusion-training convention).

``photos/cat.jpg`` + ``photos/cat.txt`` (+ optional ``photos/cat.json`` metadata) is one
pair whose id is the image's path below the folder without its extension. An image with
no sidecar text is still a record (rejected as ``no_text`` by ``clean_text`` unless the
recipe keeps image-only pairs for captioning from scratch).

Output: one folder per shard, ``part-NNNNN/KEY.<ext>`` + ``KEY.txt`` (the training
caption) + ``KEY.json`` (the whole record).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recaption.io.base import (
    ID_FIELDS,
    IMAGE_EXTS,
    SKIPPED_FOLDERS,
    InputError,
    InputShard,
    Reader,
    Writer,
    atomic_path,
    broken_pair,
    register_reader,
    register_writer,
    safe_key,
    shard_name,
)
from recaption.io.records import pair_from_record, record_from_pair, training_text
from recaption.io.webdataset import image_bytes_and_ext
from recaption.record import Pair


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not SKIPPED_FOLDERS & set(p.relative_to(folder).parts)
    )


@register_reader
class ImageFolderReader(Reader):
    format = "imagefolder"

    def plan(self) -> list[InputShard]:
        if not self.path.is_dir():
            raise InputError(f"{self.path} is not a folder")
        images = [str(p.relative_to(self.path)) for p in list_images(self.path)]
        if not images:
            raise InputError(f"{self.path} holds no images ({', '.join(IMAGE_EXTS)})")
        size = self.options.shard_size
        return [
            InputShard(i, shard_name(i), {"root": str(self.path), "images": images[start : start + size], "records": len(images[start : start + size])})
            for i, start in enumerate(range(0, len(images), size))
        ]

    def read(self, shard: InputShard) -> Iterator[Pair]:
        root = Path(shard.spec["root"])
        for rel in shard.spec["images"]:
            image = root / rel
            image_id = Path(rel).with_suffix("").as_posix()
            origin = {"file": str(image)}
            record: dict = {}
            sidecar_json = image.with_suffix(".json")
            if sidecar_json.exists():
                try:
                    record = json.loads(sidecar_json.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    yield broken_pair(image_id, "malformed_json", f"{sidecar_json.name}: {exc}", origin)
                    continue
                if not isinstance(record, dict):
                    yield broken_pair(image_id, "wrong_type", f"{sidecar_json.name} is not an object", origin)
                    continue
            sidecar_txt = image.with_suffix(".txt")
            if sidecar_txt.exists() and not any(k in record for k in ("texts", "text", "caption", "captions")):
                try:
                    record["texts"] = [sidecar_txt.read_text(encoding="utf-8")]
                except UnicodeDecodeError as exc:
                    yield broken_pair(image_id, "non_utf8", f"{sidecar_txt.name}: {exc}", origin)
                    continue
            if not any(k in record for k in ID_FIELDS):
                record["image_id"] = image_id
            # The image is the file beside the sidecars, whatever a copied .json says.
            for name in ("image_path", "path", "image", "jpg", "png", "webp"):
                record.pop(name, None)
            record["image_path"] = str(image)
            yield pair_from_record(record, self.options, origin, None, image_id)


@register_writer
class ImageFolderWriter(Writer):
    format = "imagefolder"
    suffix = ""

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        with atomic_path(self.target(shard), is_dir=True) as tmp:
            row = 0
            used: set[str] = set()

            def add(pair: Pair) -> None:
                nonlocal row
                key = safe_key(pair.image_id, row, used)
                data, ext = image_bytes_and_ext(pair)
                (tmp / f"{key}.{ext}").write_bytes(data)
                (tmp / f"{key}.txt").write_text(training_text(pair), encoding="utf-8")
                record = json.dumps(record_from_pair(pair), ensure_ascii=False)
                (tmp / f"{key}.json").write_text(record, encoding="utf-8")
                row += 1

            yield add
