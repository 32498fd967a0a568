"""An image folder with sidecar ``.txt`` captions (the diffusion-training convention).

``photos/cat.jpg`` + ``photos/cat.txt`` (+ optional ``photos/cat.json`` metadata) is one
pair whose id is the image's path below the folder without its extension. An image with
no sidecar text is still a record (rejected as ``no_text`` by ``clean_text`` unless the
recipe keeps image-only pairs for captioning from scratch).

Output: one folder per shard, ``part-NNNNN/KEY.<ext>`` + ``KEY.txt`` (the training
caption) + ``KEY.json`` (the whole record).
"""

from __future__ import annotations

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
from recaption.io.safejson import RecordProblem, decode_text, dumps, parse_record, read_small_file
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
            sidecar_txt = image.with_suffix(".txt")
            try:
                if sidecar_json.exists():
                    record = parse_record(read_small_file(sidecar_json, sidecar_json.name), sidecar_json.name)
                    if not isinstance(record, dict):
                        raise RecordProblem("wrong_type", f"{sidecar_json.name} is not an object")
                if sidecar_txt.exists() and not any(k in record for k in ("texts", "text", "caption", "captions")):
                    record["texts"] = [decode_text(read_small_file(sidecar_txt, sidecar_txt.name), sidecar_txt.name)]
            except RecordProblem as exc:
                yield broken_pair(image_id, exc.reason, str(exc), origin)
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
                # Everything that can fail comes before the first byte is written.
                record = dumps(record_from_pair(pair))
                data, ext = image_bytes_and_ext(pair)
                key = safe_key(pair.image_id, row, used)
                (tmp / f"{key}.{ext}").write_bytes(data)
                (tmp / f"{key}.txt").write_text(training_text(pair), encoding="utf-8", errors="replace")
                (tmp / f"{key}.json").write_text(record, encoding="utf-8")
                row += 1

            yield add
