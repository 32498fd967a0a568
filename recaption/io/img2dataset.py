"""img2dataset output: ``00000.tar`` (webdataset) or ``00000/`` (files) shards, each with a
``00000.parquet`` listing every sample it tried and a ``00000_stats.json``.

The images and captions are read by the WebDataset or image-folder reader (the sample's
``.json`` carries ``key`` and ``caption``). The samples img2dataset could not download
appear only in the parquet listing; they are yielded as records rejected at ``read`` with
img2dataset's own error message, so the accounting covers everything that was tried.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recaption.io.base import InputError, InputShard, Reader, broken_pair, register_reader, shard_name
from recaption.io.imagefolder import ImageFolderReader, list_images
from recaption.io.webdataset import WebDatasetReader
from recaption.limits import MAX_TEXT_CHARS
from recaption.record import Pair


def looks_like_img2dataset(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*_stats.json"))


@register_reader
class Img2DatasetReader(Reader):
    format = "img2dataset"

    def _layout(self) -> str:
        if not looks_like_img2dataset(self.path):
            raise InputError(f"{self.path} has no *_stats.json: not an img2dataset output folder")
        if any(self.path.glob("*.tar")):
            return "webdataset"
        if any(p.is_dir() for p in self.path.iterdir()):
            return "imagefolder"
        raise InputError(f"{self.path}: only img2dataset's webdataset and files output formats are read here; "
                         "for output_format=parquet, point --format parquet at the folder")

    @property
    def output_format(self) -> str:
        return self._layout()

    def plan(self) -> list[InputShard]:
        layout = self._layout()
        shards: list[InputShard] = []
        if layout == "webdataset":
            units = sorted(self.path.glob("*.tar"))
        else:
            units = sorted(p for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())
        for unit in units:
            listing = self.path / f"{unit.name.removesuffix('.tar')}.parquet"
            shards.append(
                InputShard(len(shards), shard_name(len(shards)), {"unit": str(unit), "layout": layout, "listing": str(listing)})
            )
        return shards

    def read(self, shard: InputShard) -> Iterator[Pair]:
        unit = Path(shard.spec["unit"])
        if shard.spec["layout"] == "webdataset":
            yield from WebDatasetReader(unit, self.options).read(InputShard(0, shard.name, {"file": str(unit)}))
        else:
            images = [str(p.relative_to(unit)) for p in list_images(unit)]
            whole = InputShard(0, shard.name, {"root": str(unit), "images": images})
            yield from ImageFolderReader(unit, self.options).read(whole)
        yield from self._failed_downloads(Path(shard.spec["listing"]))

    @staticmethod
    def _failed_downloads(listing: Path) -> Iterator[Pair]:
        if not listing.exists():
            return
        try:
            table = pq.read_table(listing)
        except (pa.ArrowException, OSError) as exc:
            # The listing only accounts for failed downloads; the samples were read above.
            yield broken_pair(f"{listing.stem}:listing", "corrupt_listing", f"{listing.name} cannot be read: {str(exc)[:200]}", {"file": str(listing)})
            return
        cols = set(table.column_names)
        if "status" not in cols:
            return
        for row, rec in enumerate(table.to_pylist()):
            if rec.get("status") == "success":
                continue
            key = str(rec.get("key") or f"{listing.stem}:{row}")
            detail = f"{rec.get('url', '')}: {rec.get('error_message') or rec.get('status')}"[:300]
            pair = broken_pair(key, "download_failed", detail, {"file": str(listing), "row": row})
            caption = rec.get("caption")
            if isinstance(caption, str) and len(caption) <= MAX_TEXT_CHARS:
                pair.texts = [caption]
            # The URL and the columns img2dataset kept (license, ...) stay with the reject, so a
            # retry list can be built from rejects alone.
            pair.meta.update({k: v for k, v in rec.items() if k not in ("key", "caption", "status") and _small_value(v)})
            yield pair


def _small_value(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS)
