"""WebDataset tar shards: ``KEY.jpg|png|webp`` + ``KEY.txt`` and/or ``KEY.json`` per sample.

Input is a folder of ``.tar`` files (or one tar); each tar is one shard, read as a stream
so a shard is never held in memory. Nothing is ever extracted to disk, and members whose
names are absolute or climb out with ``..``, links and devices, and over-large members
are rejected with the reason rather than trusted. A sample is its first image (at most
``MAX_IMAGE_BYTES``), its ``.txt`` and ``.json`` (at most ``MAX_RECORD_BYTES`` each), and its
other members (``KEY.cls``, ``KEY.npy``, a second image...), carried untouched as the pair's
``extras`` to the output (at most ``MAX_EXTRAS`` of ``MAX_EXTRA_BYTES`` each; one past a
limit is skipped unread and named in ``meta["dropped_members"]``, and costs only itself).
Compressed tars (``.tar.gz`` and the like, whatever the name
says) are read on purpose, under the same limits. A tar that breaks part way yields the
samples before the break and one rejected record that says where it broke.

Output: ``part-NNNNN.tar`` with ``KEY.<ext>`` (the image), ``KEY.txt`` (the training
caption), ``KEY.json`` (the whole record) and the extras, the layout open_clip and
img2dataset use, and a Hugging Face dataset card (``README.md``) that names the features.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recaption.imaging import ImageFileError, is_url, read_image_bytes
from recaption.io.atomic import atomic_path
from recaption.io.base import (
    IMAGE_EXTS,
    InputShard,
    Reader,
    Writer,
    broken_pair,
    register_reader,
    register_writer,
    safe_ext,
    safe_key,
    shard_name,
    unsafe_member_reason,
)
from recaption.io.dataset_card import write_dataset_card
from recaption.io.nested_columns import (
    METADATA_KEY,
    NULL,
    arrow_type,
    conform,
    hf_yaml_feature,
    json_paths,
    merge,
    read_sketches,
    restore,
    settle,
    sketch_of,
    typed_metadata,
)
from recaption.io.records import SAFE_EXTRA_EXT, pair_from_record, record_from_pair, record_from_sidecars, training_text
from recaption.io.safejson import RecordProblem, dumps
from recaption.limits import INT_LIMIT, MAX_EXTRA_BYTES, MAX_EXTRAS, MAX_IMAGE_BYTES, MAX_RECORD_BYTES
from recaption.record import Pair

SIDECAR_EXTS = ("txt", "json")
# A tar member as read: (name, extension, its bytes where they were needed, (reject reason, why) where it cannot be used).
Member = tuple[str, str, bytes | None, tuple[str, str] | None]


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


@register_reader
class WebDatasetReader(Reader):
    format = "webdataset"

    def plan(self) -> list[InputShard]:
        return [InputShard(i, shard_name(i), {"file": str(p)}) for i, p in enumerate(self.input_files("*.tar", ".tar shards"))]

    def read(self, shard: InputShard) -> Iterator[Pair]:
        path = Path(shard.spec["file"])
        group: list[Member] = []
        current: str | None = None
        paths: list[list[str]] | None = None  # where the shard is ours: the JSON-stored fields
        header_read = False
        lost: list[tuple[str, int, int]] = []  # members whose header lied about their size, and what they swallowed
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    key, ext = split_key(member.name)
                    if not header_read:  # the global header, if any, came before this first member
                        paths, header_read = _header_json_paths(tar), True
                    if current is not None and key != current:
                        yield self._sample(path, current, group, paths)
                        group = []
                    current = key
                    unsafe = unsafe_member_reason(member.name)
                    problem = ("unsafe_member", unsafe) if unsafe else None
                    if problem is None and not member.isfile():
                        problem = ("unsafe_member", "not a regular file (link or device)")
                    data = None
                    role = self._role(ext, group)
                    if problem is None and role != "extra":
                        limit = MAX_RECORD_BYTES if ext in SIDECAR_EXTS else MAX_IMAGE_BYTES
                        if member.size > limit:
                            problem = ("too_large", f"member of {member.size} bytes > the limit of {limit}")
                        else:
                            fh = tar.extractfile(member)
                            data = fh.read(limit) if fh else b""
                    elif problem is None:
                        # Carried, not read by any stage; one that cannot be carried costs only itself.
                        why = _extra_refused(ext, member.size, group)
                        if why:
                            problem = ("dropped", why)
                        else:
                            fh = tar.extractfile(member)
                            data = fh.read(MAX_EXTRA_BYTES) if fh else b""
                    if data is not None and problem is None:
                        swallowed = embedded_headers(data)
                        if swallowed:  # its header claims more bytes than the member has: the next members are inside it
                            lost.append((member.name, member.size, swallowed))
                            problem = ("corrupt_shard", f"its header claims {member.size} bytes, which hold {swallowed} more member header(s)")
                    group.append((member.name, ext, data, problem))
            if current is not None:
                yield self._sample(path, current, group, paths)
            for name, size, swallowed in lost:  # what a lying header took with it, counted (read past it is no use)
                yield broken_pair(f"{path.stem}:{name}", "corrupt_shard", f"{name} in {path.name}: its header claims {size} bytes, "
                                  f"which swallow {swallowed} following member(s) (their samples are lost in it)", {"file": str(path), "member": name})
        except (tarfile.TarError, EOFError, OSError) as exc:
            if current is not None and group:
                yield self._sample(path, current, group, paths)
            yield broken_pair(f"{path.stem}:broken", "corrupt_shard", f"{path.name} breaks after key {current!r}: {exc}", {"file": str(path)})

    @staticmethod
    def _role(ext: str, group: list[Member]) -> str:
        """What a member is to its sample: the first .txt, the first .json, the first image, or
        an extra (any other member, carried through untouched)."""
        if ext in SIDECAR_EXTS and not any(e == ext and d is not None for _, e, d, _ in group):
            return ext
        if f".{ext}" in IMAGE_EXTS and not any(f".{e}" in IMAGE_EXTS and d is not None for _, e, d, _ in group):
            return "image"
        return "extra"

    def _sample(self, path: Path, key: str, group: list[Member], json_fields: list[list[str]] | None) -> Pair:
        origin: dict[str, Any] = {"file": str(path), "key": key, "members": [m for m, *_ in group]}
        fallback_id = key
        dropped = [f"{m}: {p[1]}" for m, _, _, p in group if p and p[0] == "dropped"]
        problems = [(m, p) for m, _, _, p in group if p and p[0] != "dropped"]
        if problems:
            kinds = {p[0] for _, p in problems}
            reason = kinds.pop() if len(kinds) == 1 and kinds <= {"too_large", "corrupt_shard"} else "unsafe_member"
            return broken_pair(fallback_id, reason, "; ".join(f"{m}: {p[1]}" for m, p in problems)[:300], origin)
        by_ext: dict[str, bytes] = {}
        extras: dict[str, bytes] = {}
        for name, ext, data, _ in group:  # in tar order, as _role saw them
            if data is None:
                continue
            is_image = f".{ext}" in IMAGE_EXTS
            if ext not in by_ext and (ext in SIDECAR_EXTS or (is_image and not any(f".{e}" in IMAGE_EXTS for e in by_ext))):
                by_ext[ext] = data  # the sample's txt, json and image
            elif ext in by_ext or ext in extras or ext in SIDECAR_EXTS:
                dropped.append(f"{name}: a second .{ext} of the sample")
            else:
                extras[ext] = data
        try:
            record = record_from_sidecars(by_ext.get("json"), by_ext.get("txt"), key)
            if json_fields is not None and "json" in by_ext:  # a shard of ours: shaped by its sketch
                record = restore(record, json_fields)
        except RecordProblem as exc:
            return broken_pair(fallback_id, exc.reason, str(exc), origin)
        image_ext = next((e for e in by_ext if f".{e}" in IMAGE_EXTS), None)
        image = by_ext.get(image_ext) if image_ext else None
        pair = pair_from_record(record, self.options, origin, None, fallback_id, image_bytes=image)
        if image is not None:
            pair.image_ext = safe_ext(image_ext)
        if pair.reject is None:
            pair.extras = extras
            if dropped:
                pair.meta["dropped_members"] = dropped[:MAX_EXTRAS]
        return pair


def embedded_headers(data: bytes) -> int:
    """How many tar member headers lie inside a member's bytes, at 512-byte blocks with a good
    checksum: a header that claims more bytes than its member has takes the members after it
    as its own data (tarfile cannot tell)."""
    found, at = 0, data.find(b"ustar", 257)
    while at != -1:
        start = at - 257
        if start % tarfile.BLOCKSIZE == 0 and _is_header(data[start : start + tarfile.BLOCKSIZE]):
            found += 1
        at = data.find(b"ustar", at + 1)
    return found


def _is_header(block: bytes) -> bool:
    """A block tarfile itself would read as a member header (its checksum and fields good)."""
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _extra_refused(ext: str, size: int, group: list[Member]) -> str | None:
    """Why a member cannot be carried as an extra, or None."""
    if not SAFE_EXTRA_EXT.fullmatch(ext) or len(ext) > 32:
        return f"extension {ext[:40]!r} is not carried (letters, digits, _ - and dots only)"
    if size > MAX_EXTRA_BYTES:
        return f"{size} bytes > the limit of {MAX_EXTRA_BYTES} for a carried member"
    if sum(1 for _, _, d, _ in group if d is not None) >= MAX_EXTRAS + 3:  # beyond the txt, json and image
        return f"more than {MAX_EXTRAS} carried members in one sample"
    return None


# The members Hugging Face's webdataset loader decodes by extension, whatever the card says:
# one it cannot decode fails the whole dataset, so it is not carried into WebDataset output.
_TEXT_DECODED = ("txt", "text", "transcript")
_INT_MEMBERS = ("cls", "cls2", "index", "inx", "id")


def loader_unfit(ext: str, data: bytes) -> str | None:
    """Why a carried member would break Hugging Face's webdataset loader (which decodes
    ``cls`` with int(), ``npy`` without pickle, ...), or None where it loads."""
    last = ext.rsplit(".", 1)[-1].lower()
    if last in _INT_MEMBERS:
        try:
            value = int(data)
        except ValueError:
            return "not an integer, which loaders decode it as"
        return None if -INT_LIMIT <= value < INT_LIMIT else "an integer past 64 bits"
    if last in _TEXT_DECODED:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "not UTF-8 text, which loaders decode it as"
        return None
    if last in ("json", "jsn"):
        try:
            json.loads(data)
        except ValueError:
            return "not JSON, which loaders decode it as"
        return None
    if last == "npy":
        return _npy_unfit(io.BytesIO(data))
    if last == "npz":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for name in archive.namelist()[:64]:
                    with archive.open(name) as member:  # the header alone: never the (maybe huge) array
                        why = _npy_unfit(member)
                    if why:
                        return f"{name}: {why}"
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            return f"not a readable .npz ({str(exc)[:60]})"
    return None


def _npy_unfit(stream: Any) -> str | None:
    header = npy_header(stream)
    if header is None:
        return "not a readable .npy"
    return "an array of Python objects (read only with pickle, which loaders refuse)" if header[1].hasobject else None


def npy_header(stream: Any) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) from a .npy stream's header alone (bounded by numpy), never the array;
    None where it is no readable .npy."""
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, _, dtype = read_header(stream)
    except (ValueError, OSError, SyntaxError, TypeError, KeyError):
        return None
    return shape, dtype


def drop_unloadable_extras(pair: Pair) -> None:
    """Take out of ``pair.extras`` each member a loader could not decode, naming it in
    ``meta.dropped_members``: one record must not make the whole dataset unloadable."""
    unfit = {ext: why for ext, data in pair.extras.items() if (why := loader_unfit(ext, data))}
    if not unfit:
        return
    pair.extras = {ext: data for ext, data in pair.extras.items() if ext not in unfit}
    earlier = pair.meta.get("dropped_members")
    pair.meta["dropped_members"] = [*(earlier if isinstance(earlier, list) else []), *(f".{ext}: {why}" for ext, why in unfit.items())][: 2 * MAX_EXTRAS]


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def image_bytes_and_ext(pair: Pair) -> tuple[bytes, str]:
    """The encoded image of a kept pair, whether it travelled as bytes or as a local path
    (a regular file, at most MAX_IMAGE_BYTES, an image by its magic number: ``read_image_bytes``;
    its extension from those bytes); ImageFileError (an OSError) where there is none."""
    if isinstance(pair.image, (bytes, bytearray)):
        return bytes(pair.image), safe_ext(pair.image_ext)
    if not isinstance(pair.image, str) or not pair.image or is_url(pair.image):
        raise ImageFileError("no_image", f"no local image for {pair.image_id} ({str(pair.image)[:200]!r})")
    return read_image_bytes(pair.image, MAX_IMAGE_BYTES)


# The pax global header a shard of ours carries (tar readers take it as metadata, not a file):
# the sketch of its .json members (their typed shape, nested_columns), its image types and
# its extras' features.
SKETCH_HEADER, SHARD_HEADER = "recaption.sketch", "recaption.shard"


@register_writer
class WebDatasetWriter(Writer):
    """``KEY.<ext>`` + ``KEY.txt`` + ``KEY.json`` per kept pair. Every ``.json`` of a dataset has
    one shape (a key some record lacks is null, an int among floats a float, kinds that
    disagree a JSON string): a shard is staged, then written with its sketch, and
    ``finish_dataset`` brings all shards to one. Hugging Face's webdataset loader takes the
    first samples' shape for all of them and fails (or truncates 0.5 to 0) otherwise."""

    format = "webdataset"
    suffix = ".tar"

    @contextmanager
    def open_shard(self, shard: str) -> Iterator[Callable[[Pair], None]]:
        with atomic_path(self.target(shard)) as tmp:
            staging = tmp.with_name(tmp.name + ".staging.tmp")
            sketch, exts = NULL, Counter()
            kinds: dict[str, Any] = {}  # extra member -> its feature, for the dataset card
            try:
                with tarfile.open(staging, "w") as tar:
                    row = 0
                    used: set[str] = set()

                    def add(pair: Pair) -> None:
                        nonlocal row, sketch
                        # Everything that can fail comes before the first member is written.
                        drop_unloadable_extras(pair)
                        record = record_from_pair(pair, holds_extras=True)
                        encoded = dumps(record).encode("utf-8")
                        data, ext = image_bytes_and_ext(pair)
                        found = sketch_of(json.loads(encoded))  # the record as JSON holds it
                        extras = {e: d for e, d in pair.extras.items() if e not in (ext, "txt", "json")}
                        key = safe_key(pair.image_id, row, used)
                        _add_member(tar, f"{key}.{ext}", data)
                        _add_member(tar, f"{key}.txt", training_text(pair).encode("utf-8", "replace"))
                        _add_member(tar, f"{key}.json", encoded)
                        for extra_ext, extra in extras.items():
                            _add_member(tar, f"{key}.{extra_ext}", extra)
                            kinds[extra_ext] = _same(kinds.get(extra_ext, NO_KIND), extra_feature(extra_ext, extra))
                        sketch = merge(sketch, found)
                        exts[ext] += 1
                        row += 1

                    yield add
                if row:
                    _retype_tar(staging, tmp, sketch, None, {"image_exts": exts, "extras": kinds})
                else:  # a shard that kept nothing: a bare empty tar (tarfile cannot read a global header with no member after it)
                    tarfile.open(tmp, "w").close()
            finally:
                staging.unlink(missing_ok=True)

    def finish_dataset(self) -> list[str]:
        found = {f: _shard_header(f) for f in sorted(self.out_dir.glob(f"*{self.suffix}"))}
        union, exts, kinds = NULL, Counter(), {}
        for sketch, shard in found.values():
            union = merge(union, sketch if sketch is not None else NULL)
            exts.update(shard["image_exts"])
            for ext, kind in shard["extras"].items():
                kinds[ext] = _same(kinds.get(ext, NO_KIND), kind)
        for f, (sketch, shard) in found.items():
            if sketch is not None and settle(sketch) != settle(union):
                with atomic_path(f) as tmp:
                    _retype_tar(f, tmp, union, sketch, shard)
        features = [hf_yaml_feature(ext, "image") for ext in sorted(exts)]
        features += [hf_yaml_feature("txt", pa.string()), hf_yaml_feature("json", arrow_type(settle(union)))]
        # Extras whose type Hugging Face's decoders give are named; the loader leaves out the others.
        features += [{"name": ext, **kind} if isinstance(kind, dict) else hf_yaml_feature(ext, kind) for ext, kind in sorted(kinds.items()) if kind and ext not in exts]
        features += [hf_yaml_feature(name, pa.string()) for name in ("__key__", "__url__")]
        write_dataset_card(self.out_dir, f"*{self.suffix}", features, "WebDataset shards: `KEY.<image>`, `KEY.txt` (the training caption), `KEY.json` (the whole record).")
        if len(exts) > 1:
            mix = ", ".join(f"{n} {ext}" for ext, n in exts.most_common())
            return [f"the shards mix image types ({mix}): load them with datasets.load_dataset('{self.out_dir}') (its card names "
                    "them all), or re-run with --set image_check.keep_formats=[JPEG] for one type (others re-encoded as JPEG)"]
        return []


def _header_json_paths(tar: tarfile.TarFile) -> list[list[str]] | None:
    sketch = read_sketches({METADATA_KEY: tar.pax_headers.get(SKETCH_HEADER, "").encode()}).get("json")
    return json_paths(settle(sketch)) if sketch is not None else None


def _shard_header(path: Path) -> tuple[tuple | None, dict[str, Any]]:
    """A shard's sketch (None: not ours), image-type counts and extras' features, from its pax
    global header."""
    try:
        with tarfile.open(path, "r:") as tar:  # opening reads the first member, and the global header before it
            headers = dict(tar.pax_headers)
    except tarfile.ReadError:  # a global header with no member after it (an empty shard of an older version)
        return None, {"image_exts": Counter(), "extras": {}}
    sketches = read_sketches({METADATA_KEY: headers.get(SKETCH_HEADER, "").encode()})
    try:
        shard = json.loads(headers.get(SHARD_HEADER, "{}"))
        shard = {"image_exts": Counter({str(k): int(v) for k, v in shard.get("image_exts", {}).items()}), "extras": dict(shard.get("extras", {}))}
    except (ValueError, AttributeError, TypeError):
        shard = {"image_exts": Counter(), "extras": {}}
    return sketches.get("json"), shard


NO_KIND = "-"  # no member of that extension seen yet


def _same(a: Any, b: Any) -> Any:
    """One feature for an extra across samples: theirs where they agree, else none (None)."""
    return b if a == NO_KIND else (a if a == b else None)


_TEXT_MEMBERS = ("text", "transcript")  # typed as strings on the card (txt is the caption's own)


def extra_feature(ext: str, data: bytes) -> Any:
    """The dataset-card feature Hugging Face's webdataset decoders give an extra member
    (``cls`` an int, ``npy`` a nested list of its dtype, a second image an image), or None
    where it cannot be told (the loader then leaves that member out)."""
    ext = ext.rsplit(".", 1)[-1]  # the loader decodes by the last extension (seg.png is a png)
    if f".{ext}" in IMAGE_EXTS:
        return "image"
    if ext in _INT_MEMBERS:
        try:
            return "int64" if -INT_LIMIT <= int(data.decode("utf-8")) < INT_LIMIT else None
        except (UnicodeDecodeError, ValueError):
            return None
    if ext in _TEXT_MEMBERS:
        return "string"
    if ext == "npy":
        header = npy_header(io.BytesIO(data))
        if header is None:
            return None
        shape, dtype = header
        if dtype.kind not in "biuf" or len(shape) > 3:
            return None
        inner: Any = dtype.name
        for _ in shape:
            inner = {"list": inner}
        return inner
    return None


def _retype_tar(source: Path, target: Path, sketch: tuple, source_sketch: tuple | None, shard: dict[str, Any]) -> None:
    """Copy ``source`` into ``target`` member by member, each ``.json`` shaped by ``sketch``
    (and first restored from ``source_sketch`` where the source was shaped already)."""
    settled = settle(sketch)
    old_paths = json_paths(settle(source_sketch)) if source_sketch is not None else None
    headers = {SKETCH_HEADER: typed_metadata({"json": sketch})[METADATA_KEY].decode(), SHARD_HEADER: json.dumps(shard)}
    with tarfile.open(source, "r:") as src, tarfile.open(target, "w", format=tarfile.PAX_FORMAT, pax_headers=headers) as out:
        for member in src:
            fh = src.extractfile(member)
            data = fh.read() if fh else b""
            if member.name.endswith(".json"):
                value = json.loads(data)
                if old_paths is not None:
                    value = restore(value, old_paths)
                data = dumps(conform(value, settled)).encode("utf-8")
            _add_member(out, member.name, data)
