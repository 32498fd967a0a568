"""img2dataset output: ``00000.tar`` (webdataset) or ``00000/`` (files) shards, each with a
``00000.parquet`` listing every sample it tried and a ``00000_stats.json``; or, for its
``parquet`` output format, ``00000.parquet`` alone, one row per sample tried, the image bytes
in a ``jpg`` (``png``, ``webp``) column.

The images and captions are read by the WebDataset or image-folder reader (the sample's
``.json`` carries ``key`` and ``caption``), or from the Parquet rows. The samples img2dataset
could not download (status other than ``success``) are yielded as records rejected at
``read`` as ``download_failed`` with img2dataset's own error message, the URL and the other
columns in the reject's meta, so the accounting covers everything that was tried.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from recaption.io.base import InputError, InputShard, Reader, broken_pair, register_reader, shard_name
from recaption.io.imagefolder import ImageFolderReader, list_images
from recaption.io.records import pair_from_record
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
        if any(p.is_dir() and p.name.isdigit() for p in self.path.iterdir()):
            return "imagefolder"
        if any(self.path.glob("*.parquet")):
            return "parquet"
        raise InputError(f"{self.path} holds img2dataset stats but no shards (.tar files, numbered folders or .parquet files)")

    @property
    def output_format(self) -> str:
        return self._layout()

    def plan(self) -> list[InputShard]:
        layout = self._layout()
        shards: list[InputShard] = []
        if layout == "webdataset":
            units = sorted(self.path.glob("*.tar"))
        elif layout == "parquet":
            units = sorted(self.path.glob("*.parquet"))
        else:
            units = sorted(p for p in self.path.iterdir() if p.is_dir() and p.name.isdigit())
        for unit in units:
            listing = self.path / f"{unit.name.removesuffix('.tar').removesuffix('.parquet')}.parquet"
            shards.append(
                InputShard(len(shards), shard_name(len(shards)), {"unit": str(unit), "layout": layout, "listing": str(listing)})
            )
        return shards

    def read(self, shard: InputShard) -> Iterator[Pair]:
        unit = Path(shard.spec["unit"])
        if shard.spec["layout"] == "parquet":
            yield from self._parquet_rows(unit)
            return
        if shard.spec["layout"] == "webdataset":
            yield from WebDatasetReader(unit, self.options).read(InputShard(0, shard.name, {"file": str(unit)}))
        else:
            images = [str(p.relative_to(unit)) for p in list_images(unit)]
            whole = InputShard(0, shard.name, {"root": str(unit), "images": images})
            yield from ImageFolderReader(unit, self.options).read(whole)
        yield from self._failed_downloads(Path(shard.spec["listing"]))

    def _parquet_rows(self, path: Path) -> Iterator[Pair]:
        """img2dataset's parquet output: every sample tried is a row; the image bytes sit in
        the column named by its encode format."""
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            yield broken_pair(f"{path.stem}:file", "corrupt_file", f"{path.name} cannot be read: {str(exc)[:200]}", {"file": str(path)})
            return
        image_col = next((c for c in ENCODE_FORMATS if c in pf.schema_arrow.names), None)
        row = 0
        for g in range(pf.metadata.num_row_groups):
            try:
                records = pf.read_row_group(g).to_pylist()
            except (pa.ArrowException, OSError, ValueError) as exc:
                n = pf.metadata.row_group(g).num_rows
                for i in range(n):
                    yield broken_pair(f"{path.stem}:{row + i}", "corrupt_row_group", f"row group {g} of {path.name}: {str(exc)[:200]}", {"file": str(path), "row": row + i})
                row += n
                continue
            for rec in records:
                origin = {"file": str(path), "row": row}
                data = rec.pop(image_col, None) if image_col else None
                if rec.get("status", "success") != "success" or not isinstance(data, (bytes, bytearray)):
                    yield _failed_download(rec, path, row)
                else:
                    if rec.get("txt") is not None:  # save_caption's copy of the caption wins, as in the tar layouts
                        rec["caption"] = rec.pop("txt")
                    pair = pair_from_record(rec, self.options, origin, None, f"{path.stem}:{row}", image_bytes=bytes(data))
                    pair.image_ext = image_col
                    yield pair
                row += 1

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
            if rec.get("status") != "success":
                yield _failed_download(rec, listing, row)


ENCODE_FORMATS = ("jpg", "png", "webp")  # img2dataset's --encode_format values: its image column


def _failed_download(rec: dict, listing: Path, row: int) -> Pair:
    """A sample img2dataset tried and could not get, rejected with its own message."""
    key = str(rec.get("key") or f"{listing.stem}:{row}")
    detail = f"{rec.get('url', '')}: {rec.get('error_message') or rec.get('status') or 'no image'}"[:300]
    pair = broken_pair(key, "download_failed", detail, {"file": str(listing), "row": row})
    caption = rec.get("caption") if rec.get("caption") is not None else rec.get("txt")
    if isinstance(caption, str) and len(caption) <= MAX_TEXT_CHARS:
        pair.texts = [caption]
    # The URL and the columns img2dataset kept (license, ...) stay with the reject, so a
    # retry list can be built from rejects alone.
    pair.meta.update({k: v for k, v in rec.items() if k not in ("key", "caption", "txt", "status") and _small_value(v)})
    return pair


def _small_value(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS)
