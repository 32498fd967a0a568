"""The dedup decision in three steps, so that one process and a Ray cluster make it alike.

1. **map** (per shard, or everything at once): a shard's signatures become rows of five
   *families*, each row carrying the partition its key falls in:
   ``ids`` (image id), ``sha`` (exact image), ``image`` (perceptual-hash nodes: a record's hash
   and its mirror's are *whole* nodes, its crop windows *window* nodes; a row per node per
   hash block, so that two near hashes, which share a block exactly, meet in one partition),
   ``text`` (normalised caption hash) and ``band`` (MinHash-LSH bands).
2. **reduce** (per partition): exact families give their groups of two or more; ``image``
   gives the pairs of distinct nodes within the radius (whole to whole within ``radius``, a
   window to a whole within ``window_radius``, never window to window) and who holds them;
   ``band`` gives the pairs of distinct captions whose MinHash agreement reaches the Jaccard
   threshold. Only what is duplicated comes out: the output is proportional to the
   duplicates, not to the records.
3. **resolve** (one process, from the reduce outputs only): the rules, in order: repeated
   ids, copies of evaluation images, of what earlier runs kept, exact images, near images,
   then shared captions, each among the records the earlier rules left.

In one process (``decide_in_process``) the map runs over every signature and the reduce over
one partition; in tasks (``recaption.dedup.sharded``) each map is a task that writes its rows
to one Parquet file per family, a row group per partition, and each (family, partition) is a
reduce task reading its row group of every map file. The pairs and groups are the same either
way, so the decisions are (unless a hot bucket is capped: a bucket is then searched among its
nearest members only, and the buckets differ between the two).

What comes out is facts, as columns (``DecisionColumns``: which rule took each duplicated
record, the record it duplicates, the report's clusters); the dedup stage words them as
rejects, scores and report marks.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from recaption.dedup.groups import components_of_edges
from recaption.dedup.hashes import HotBuckets, block_join, blocks
from recaption.dedup.image_hashes import CROP_WINDOWS
from recaption.dedup.references import ReferenceHits, References, RefHit
from recaption.dedup.text import MinHasher
from recaption.io.signatures import POSITION_BITS, order_of

WINDOWS = len(CROP_WINDOWS)  # window hashes per record
FAMILIES = ("ids", "sha", "image", "text", "band")
WHOLE, WINDOW = 0, 1


@dataclass(frozen=True)
class Rules:
    ids: bool = True
    exact_image: bool = True
    near_image: bool = True
    radius: int = 4
    window_radius: int = 2
    hot_bucket: int = 512
    # A caption is compared with every other of a band bucket up to this many, then with its
    # next ones (in caption-hash order) only: templated captions ("Product photo of item 123")
    # fill a band bucket with thousands of distinct captions, and a true near copy (Jaccard 0.8)
    # shares about 6 of the 16 bands, so it meets its twin in a quieter one. 16 keeps the
    # decision within 2x of linking runs only (benchmarks/RESULTS.md).
    text_hot_bucket: int = 16
    exact_text: bool = True
    near_text: bool = True
    jaccard: float = 0.8
    text_action: str = "flag"
    bands: int = 16
    num_perm: int = 64

    def minhasher(self) -> MinHasher:
        return MinHasher(self.num_perm, self.bands)


class SignatureColumns:
    """Signatures as numpy columns, filled in chunks, so that deciding over millions of
    records costs tens of bytes per record instead of a Python dict each."""

    CHUNK = 65_536

    def __init__(self, num_perm: int) -> None:
        self.keys: list[str] = []
        self.ids: list[str] = []
        self.num_perm = num_perm  # 0: no MinHash column (near-text dedup is off)
        self._chunks: list[dict[str, np.ndarray]] = []
        self._done: dict[str, np.ndarray] = {}
        self._fill = self.CHUNK

    def __len__(self) -> int:
        return len(self.keys)

    def _new_chunk(self) -> None:
        c = self.CHUNK
        self._chunks.append({
            "sha": np.zeros(c, np.uint64), "phash": np.zeros(c, np.uint64), "has_phash": np.zeros(c, bool),
            "mirror": np.zeros(c, np.uint64), "has_mirror": np.zeros(c, bool),
            "windows": np.zeros((c, WINDOWS), np.uint64), "n_windows": np.zeros(c, np.int8),
            "pixels": np.zeros(c, np.int64), "text": np.zeros(c, np.uint64), "minhash": np.zeros((c, self.num_perm), np.uint32),
        })
        self._fill = 0

    def add(self, key: str, sig: dict[str, Any]) -> None:
        if self._fill == self.CHUNK:
            self._new_chunk()
        row, chunk = self._fill, self._chunks[-1]
        self.keys.append(key)
        self.ids.append(sig["id"])
        chunk["sha"][row] = int(sig["sha"] or "0", 16)
        if sig.get("phash"):
            chunk["phash"][row] = int(sig["phash"], 16)
            chunk["has_phash"][row] = True
        if sig.get("phash_mirror"):
            chunk["mirror"][row] = int(sig["phash_mirror"], 16)
            chunk["has_mirror"][row] = True
        windows = sig.get("phash_windows") or []
        if isinstance(windows, list):
            found = [int(w, 16) for w in windows[:WINDOWS] if isinstance(w, str)]
            chunk["windows"][row, : len(found)] = found
            chunk["n_windows"][row] = len(found)
        chunk["pixels"][row] = sig.get("pixels", 0)
        chunk["text"][row] = sig.get("text", 0)
        if self.num_perm and sig.get("minhash"):
            chunk["minhash"][row] = np.frombuffer(bytes.fromhex(sig["minhash"]), dtype=np.uint32)
        self._fill += 1

    def column(self, name: str) -> np.ndarray:
        """The whole column; its chunks are released (a column is concatenated once)."""
        if name in self._done:
            return self._done[name]
        if not self._chunks:  # no record at all: empty columns of the right shapes and types
            self._new_chunk()
        parts = [c.pop(name) for c in self._chunks]
        parts[-1] = parts[-1][: self._fill]
        self._done[name] = np.concatenate(parts)
        return self._done[name]


# -- 1. map ---------------------------------------------------------------------------------

def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit mixer (splitmix64's finaliser): partitions from keys whose low bits are not random."""
    x = np.asarray(x, np.uint64).copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _part(keys: np.ndarray, partitions: int) -> np.ndarray:
    return (_mix(keys) % np.uint64(partitions)).astype(np.int32)


@dataclass
class BandLookup:
    """In one process, band rows name their caption's row here instead of carrying its MinHash,
    order and id: sixteen copies of a 256-byte MinHash per record would be most of the memory."""

    minhash: np.ndarray
    orders: np.ndarray
    ids: pa.Array


def map_signatures(cols: SignatureColumns, rules: Rules, partitions: int, bands_of: Any = None, in_process: bool = False) -> dict[str, Any]:
    """The rows each family's reduce needs, from one batch of signatures (a shard, or all).
    ``in_process`` (one partition, reduced here): the ``band`` entry is (rows, ``BandLookup``)."""
    n = len(cols)
    orders = np.fromiter((order_of(k) for k in cols.keys), np.int64, count=n)
    ids = pa.array(cols.ids, pa.string())
    pixels = cols.column("pixels")
    out: dict[str, pa.Table] = {}
    if rules.ids:
        id_keys = np.fromiter((zlib.crc32(i.encode("utf-8", "surrogatepass")) for i in cols.ids), np.uint64, count=n)
        out["ids"] = pa.table({"part": _part(id_keys, partitions), "id": ids, "order": orders})
    sha = cols.column("sha")
    if rules.exact_image:
        has = sha != 0
        out["sha"] = pa.table({"part": _part(sha[has], partitions), "sha": sha[has], "order": orders[has],
                               "pixels": pixels[has], "id": ids.filter(pa.array(has))})
    if rules.near_image:
        out["image"] = _image_rows(cols, orders, ids, pixels, rules, partitions)
    text = cols.column("text")
    has_text = text != 0
    if rules.exact_text:
        out["text"] = pa.table({"part": _part(text[has_text], partitions), "text": text[has_text],
                                "order": orders[has_text], "id": ids.filter(pa.array(has_text))})
    if rules.near_text and bands_of is not None:
        out["band"] = _band_rows(cols.column("minhash")[has_text], text[has_text], orders[has_text],
                                 ids.filter(pa.array(has_text)), rules, partitions, bands_of, in_process)
    return out


def _image_rows(cols: SignatureColumns, orders: np.ndarray, ids: pa.Array, pixels: np.ndarray, rules: Rules, partitions: int) -> pa.Table:
    phash, has_phash = cols.column("phash"), cols.column("has_phash")
    mirror, has_mirror = cols.column("mirror"), cols.column("has_mirror") & has_phash
    windows, n_windows = cols.column("windows"), cols.column("n_windows")
    record = np.arange(len(orders))
    in_window = (np.arange(WINDOWS)[None, :] < n_windows[:, None]) & has_phash[:, None]
    whole_mirror = has_mirror & (mirror != phash)  # a symmetric image's mirror is itself
    owner = np.concatenate([record[has_phash], record[whole_mirror], np.broadcast_to(record[:, None], windows.shape)[in_window]])
    value = np.concatenate([phash[has_phash], mirror[whole_mirror], windows[in_window]])
    cls = np.concatenate([np.full(int(has_phash.sum()) + int(whole_mirror.sum()), WHOLE, np.int8), np.full(int(in_window.sum()), WINDOW, np.int8)])
    # One row per node per block: two hashes within the radius share one of radius+1 blocks
    # exactly, so they meet in that block's partition. Rows that land in the same partition
    # twice are kept once.
    if partitions > 1:
        parts = [_part((np.uint64(b) << np.uint64(56)) ^ ((value >> np.uint64(shift)) & np.uint64((1 << width) - 1)), partitions)
                 for b, (shift, width) in enumerate(blocks(rules.radius + 1))]
        part = np.concatenate(parts)
        row = np.tile(np.arange(len(value)), len(parts))
        keep = np.unique(np.stack([part.astype(np.int64), row], axis=1), axis=0)
        part, row = keep[:, 0].astype(np.int32), keep[:, 1]
    else:
        part, row = np.zeros(len(value), np.int32), np.arange(len(value))
    who = owner[row]
    return pa.table({"part": part, "value": value[row], "cls": cls[row], "order": orders[who], "pixels": pixels[who],
                     "id": ids.take(pa.array(who, pa.int64()))})


def _band_rows(minhash: np.ndarray, text: np.ndarray, orders: np.ndarray, ids: pa.Array, rules: Rules, partitions: int, bands_of: Any,
               in_process: bool) -> Any:
    n, b = len(text), rules.bands
    band_keys = np.stack([bands_of(minhash, band) for band in range(b)], axis=0) if n else np.zeros((b, 0), np.uint64)
    band = np.repeat(np.arange(b, dtype=np.int8), n)
    key = band_keys.reshape(-1)
    row = np.tile(np.arange(n, dtype=np.int32), b)
    if in_process:
        rows = pa.table({"band": band, "key": key, "text": text[row], "row": row})
        return rows, BandLookup(minhash, orders, ids)
    part = _part(key ^ (band.astype(np.uint64) << np.uint64(58)), partitions) if partitions > 1 else np.zeros(len(key), np.int32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(minhash[row].reshape(-1), pa.uint32()), rules.num_perm) if n else \
        pa.array([], pa.list_(pa.uint32(), rules.num_perm))
    return pa.table({"part": part, "band": band, "key": key, "text": text[row], "minhash": flat, "order": orders[row],
                     "id": ids.take(pa.array(row, pa.int64()))})


# -- 2. reduce ------------------------------------------------------------------------------

def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Integer codes of a column (strings or integers) that are equal exactly where its values are."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.dictionary_encode().indices.to_numpy().astype(np.int64)  # a hash table, not a sort of strings
    values = column.to_numpy()
    return values.view(np.int64) if values.dtype == np.uint64 else values.astype(np.int64)


def first_of_each(keys: list[np.ndarray]) -> np.ndarray:
    """The row numbers, in row order, of the first row of each distinct combination of the
    integer columns ``keys`` (a stable sort: a fraction of what ``np.unique(axis=0)`` holds)."""
    if not len(keys[0]):
        return np.zeros(0, np.int64)
    by = np.lexsort(keys[::-1])
    new = np.zeros(len(by), bool)
    new[0] = True
    for k in keys:
        sorted_k = k[by]
        new[1:] |= sorted_k[1:] != sorted_k[:-1]
    return np.sort(by[new])


def _shared(codes: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Per row: is its code held by two or more distinct records? (A record may come twice.)"""
    if not len(codes):
        return np.zeros(0, bool)
    by = np.lexsort((orders, codes))
    c, o = codes[by], orders[by]
    run = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1
    distinct = np.r_[True, (c[1:] != c[:-1]) | (o[1:] != o[:-1])]
    records = np.bincount(run[distinct], minlength=int(run[-1]) + 1)
    out = np.empty(len(codes), bool)
    out[by] = records[run] > 1
    return out


def reduce_groups(table: pa.Table, key: str) -> pa.Table:
    """The rows whose ``key`` two or more distinct records share (exact duplicates)."""
    if "part" in table.column_names:
        table = table.drop_columns(["part"])
    codes = _codes(table.column(key))
    return table.filter(pa.array(_shared(codes, table.column("order").to_numpy())))


EDGE_SCHEMA = pa.schema([("a", pa.uint64()), ("a_cls", pa.int8()), ("b", pa.uint64()), ("b_cls", pa.int8())])


def reduce_image(table: pa.Table, rules: Rules, hot: HotBuckets | None = None) -> tuple[pa.Table, pa.Table]:
    """(edges between distinct nodes within their radius, the member rows of every node that is
    in an edge or held by two or more records)."""
    hot = hot if hot is not None else HotBuckets()
    table = table.drop_columns(["part"]) if "part" in table.column_names else table
    value = table.column("value").to_numpy()
    cls = table.column("cls").to_numpy()
    whole = np.unique(value[cls == WHOLE])
    window = np.unique(value[cls == WINDOW])
    edges: list[tuple[np.ndarray, int, np.ndarray, int]] = []
    if len(whole) > 1:
        p = block_join(whole, whole, rules.radius, True, rules.hot_bucket, hot)
        edges.append((whole[p[:, 0]], WHOLE, whole[p[:, 1]], WHOLE))
    if len(window) and len(whole):
        p = block_join(window, whole, rules.window_radius, False, rules.hot_bucket, hot)
        edges.append((window[p[:, 0]], WINDOW, whole[p[:, 1]], WHOLE))
    cols = {
        "a": np.concatenate([e[0] for e in edges] + [np.zeros(0, np.uint64)]),
        "a_cls": np.concatenate([np.full(len(e[0]), e[1], np.int8) for e in edges] + [np.zeros(0, np.int8)]),
        "b": np.concatenate([e[2] for e in edges] + [np.zeros(0, np.uint64)]),
        "b_cls": np.concatenate([np.full(len(e[2]), e[3], np.int8) for e in edges] + [np.zeros(0, np.int8)]),
    }
    edge_table = pa.table(cols, schema=EDGE_SCHEMA)
    orders = table.column("order").to_numpy()
    keep = np.zeros(len(value), bool)
    for c in (WHOLE, WINDOW):  # a node is a value of one class
        mine = cls == c
        in_edge = np.concatenate([cols["a"][cols["a_cls"] == c], cols["b"][cols["b_cls"] == c]])
        keep[mine] = _shared(value[mine].view(np.int64), orders[mine]) | np.isin(value[mine], in_edge)
    members = table.filter(pa.array(keep))  # a record's rows for one node, once (two of its windows can hash alike)
    first = first_of_each([members.column(c).to_numpy() for c in ("order", "value", "cls")])
    return edge_table, members.take(pa.array(first)) if len(first) < members.num_rows else members


TEXT_EDGE_SCHEMA = pa.schema([("a", pa.uint64()), ("b", pa.uint64())])
EXPAND = 1 << 20  # candidate pairs verified at once


def _agreeing(flat: np.ndarray, ra: np.ndarray, rb: np.ndarray, jaccard: float, step: int = 16) -> np.ndarray:
    """Which pairs of rows agree on at least ``jaccard`` of their MinHash values: compared a
    slice of columns at a time, dropping pairs that can no longer reach it (exact, and most
    candidates from a crowded bucket go after the first slices)."""
    width = flat.shape[1]
    needed = jaccard * width - 1e-9
    alive = np.arange(len(ra))
    agreed = np.zeros(len(ra), np.int32)
    for start in range(0, width, step):
        cols = slice(start, min(width, start + step))
        agreed[alive] += (flat[ra[alive], cols] == flat[rb[alive], cols]).sum(axis=1, dtype=np.int32)
        left = width - cols.stop
        alive = alive[agreed[alive] + left >= needed]
        if not len(alive):
            break
    keep = np.zeros(len(ra), bool)
    keep[alive] = True
    return keep


def reduce_band(table: pa.Table, rules: Rules, hot: HotBuckets | None = None, lookup: BandLookup | None = None) -> tuple[pa.Table, pa.Table]:
    """(pairs of distinct captions that share a band and agree on at least ``jaccard`` of their
    MinHash values, the member rows of the captions in such a pair). Rows carry their MinHash,
    order and id, or (with ``lookup``) a row number into it. One band at a time: buckets never
    span bands, and a sixteenth of the rows is what the sorts hold."""
    hot = hot if hot is not None else HotBuckets()
    band = table.column("band").to_numpy()
    key = table.column("key").to_numpy()
    text = table.column("text").to_numpy()
    if lookup is not None:
        flat, sig_row = lookup.minhash, table.column("row").to_numpy()
    else:
        column = table.column("minhash")
        if isinstance(column, pa.ChunkedArray):
            column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.uint32).reshape(-1, rules.num_perm)
        sig_row = np.arange(table.num_rows)
    found: list[np.ndarray] = []
    for b in np.unique(band):
        mine = np.flatnonzero(band == b)
        found.extend(_bucket_pairs(key[mine], text[mine], sig_row[mine], flat, rules, hot))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.uint64)
    pairs = np.unique(np.sort(pairs, axis=1), axis=0) if len(pairs) else pairs
    edges = pa.table({"a": pairs[:, 0], "b": pairs[:, 1]}, schema=TEXT_EDGE_SCHEMA)
    if lookup is not None:  # each record has a row per band: one band's rows name every record once
        one = np.flatnonzero(band == (band[0] if len(band) else 0))
        rows = sig_row[one[np.isin(text[one], pairs.reshape(-1))]]
        caption = text[one][np.isin(text[one], pairs.reshape(-1))]
        members = pa.table({"text": caption, "order": lookup.orders[rows], "id": lookup.ids.take(pa.array(rows))})
    else:
        members = table.filter(pa.array(np.isin(text, pairs.reshape(-1)))).select(["text", "order", "id"])
        first = first_of_each([members.column(c).to_numpy() for c in ("order", "text")])  # a row per band: one
        members = members.take(pa.array(first))
    return edges, members


def _bucket_pairs(key: np.ndarray, text: np.ndarray, sig_row: np.ndarray, flat: np.ndarray, rules: Rules, hot: HotBuckets) -> list[np.ndarray]:
    """One band's rows: the verified (caption, caption) pairs of each bucket of equal ``key``."""
    # by bucket, then caption; one row per (bucket, caption): a caption many records share is compared once
    rows = np.lexsort((text, key))
    repeat = (key[rows][1:] == key[rows][:-1]) & (text[rows][1:] == text[rows][:-1])
    rows = rows[np.r_[True, ~repeat]]
    k = key[rows]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    lengths = np.diff(np.r_[starts, len(rows)])
    # candidates: every pair in a bucket; in a hot one, each caption with the next text_hot_bucket
    pos = np.arange(len(rows))
    count = np.minimum(np.repeat(starts + lengths, lengths) - pos - 1, rules.text_hot_bucket)
    capped = lengths > rules.text_hot_bucket + 1
    if capped.any():
        hot.buckets += int(capped.sum())
        hot.largest = max(hot.largest, int(lengths.max()))
        hot.searches += int(lengths[capped].sum())
    ends = np.cumsum(count)
    found: list[np.ndarray] = []
    lo = 0
    while lo < len(rows) and ends[-1] > (ends[lo] - count[lo]):
        done = int(ends[lo] - count[lo])
        hi = max(lo + 1, int(np.searchsorted(ends, done + EXPAND, "right")))
        c = count[lo:hi]
        i = np.repeat(pos[lo:hi], c)
        j = i + 1 + (np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c))
        ra, rb = rows[i], rows[j]
        agree = _agreeing(flat, sig_row[ra], sig_row[rb], rules.jaccard)
        found.append(np.stack([text[ra[agree]], text[rb[agree]]], axis=1))
        lo = hi
    return found


# -- 3. resolve -----------------------------------------------------------------------------

HOT_FAMILIES = ("near_image", "near_text", "contaminates_eval", "seen_before")  # where a hot bucket can be capped, by what searched


def reduce_family(family: str, table: Any, rules: Rules, hot: dict[str, HotBuckets]) -> list[pa.Table]:
    """One partition of one family reduced: what ``Resolver.add`` takes for it. ``table`` is the
    family's rows, or for ``band`` in one process (rows, ``BandLookup``)."""
    if family in ("ids", "sha", "text"):
        return [reduce_groups(table, {"ids": "id", "sha": "sha", "text": "text"}[family])]
    if family == "image":
        return list(reduce_image(table, rules, hot["near_image"]))
    rows, lookup = table if isinstance(table, tuple) else (table, None)
    return list(reduce_band(rows, rules, hot["near_text"], lookup))


NONE, DUPLICATE_ID, REFERENCE, EXACT_IMAGE, NEAR_IMAGE, DUPLICATE_TEXT = range(6)  # the rule that took a record


class DecisionColumns:
    """The decisions as columns over the duplicated records (tens of bytes each): which rule
    took each record (``reason``), the record it duplicates (``other``), its caption group,
    the reference it copies (``hits``) and the clusters the report shows (``shown``). Rows are
    indices into ``every``, the duplicated records' orders, sorted."""

    def __init__(self, every: np.ndarray, first_row: np.ndarray, id_values: pa.Array) -> None:
        n = len(every)
        self.every, self.first_row, self.id_values = every, first_row, id_values
        self.reason = np.zeros(n, np.int8)
        self.other = np.full(n, -1, np.int64)  # the record it duplicates (an index into ``every``)
        self.text_count = np.zeros(n, np.int32)
        self.text_first = np.full(n, -1, np.int64)
        self.flagged = np.zeros(n, bool)
        self.hits: dict[int, RefHit] = {}
        # row -> its place in a duplicate cluster the report shows: {"cluster": the kept row,
        # "role": "kept" | "dropped", "bits": Hamming distance to the kept record's hashes}
        self.shown: dict[int, dict[str, Any]] = {}
        self._decided: np.ndarray | None = None

    def set(self, rows: np.ndarray, reason: int, other: np.ndarray) -> None:
        self.reason[rows] = reason
        self.other[rows] = other

    def decided(self) -> np.ndarray:
        """The rows something was decided for, in input order."""
        if self._decided is None:
            marked = np.zeros(len(self.every), bool)
            marked[list(self.shown)] = True
            self._decided = np.flatnonzero((self.reason != NONE) | (self.text_count > 0) | self.flagged | marked)
        return self._decided

    def decided_in_shard(self, shard_index: int) -> np.ndarray:
        rows = self.decided()
        lo, hi = np.searchsorted(self.every[rows], [shard_index << POSITION_BITS, (shard_index + 1) << POSITION_BITS])
        return rows[lo:hi]

    def row_of(self, order: int) -> int | None:
        """The decided row of a record order, or None."""
        rows = self.decided()
        j = int(np.searchsorted(self.every[rows], order))
        return int(rows[j]) if j < len(rows) and self.every[rows[j]] == order else None

    def name(self, i: int) -> str:
        return str(self.id_values[int(self.first_row[i])].as_py())


@dataclass
class Found:
    """What the decision found: the columns, each kind of reference's hits, the hot-bucket counts."""

    columns: DecisionColumns
    hits: dict[str, ReferenceHits]
    hot: dict[str, HotBuckets]


def decide_in_process(rules: Rules, references: References, signatures: Iterable[tuple[str, dict[str, Any]]]) -> Found:
    """In one process: every signature mapped at once, each family reduced as one partition, resolved."""
    cols = SignatureColumns(rules.num_perm if rules.near_text else 0)
    for key, sig in signatures:
        cols.add(key, sig)
    resolver = Resolver(rules)
    hot = {name: HotBuckets() for name in HOT_FAMILIES}
    hits = reference_hits(references, cols, hot)
    for family, table in map_signatures(cols, rules, 1, rules.minhasher().band_hash, in_process=True).items():
        resolver.add(family, *reduce_family(family, table, rules, hot))
    return resolve(resolver, hits, hot)


def reference_hits(references: References, cols: SignatureColumns, hot: dict[str, HotBuckets]) -> dict[str, ReferenceHits]:
    image = {name: cols.column(name) for name in ("sha", "phash", "has_phash", "mirror", "has_mirror")}
    return references.hits(image, cols.keys, cols.ids, hot)


def resolve(resolver: Resolver, hits: dict[str, ReferenceHits], hot: dict[str, HotBuckets]) -> Found:
    for kind, found in hits.items():
        resolver.add_reference_hits(kind, found.hits)
    return Found(resolver.resolve(), hits, hot)


# What makes a row of each of the resolver's tables distinct: the same row comes from several
# reduce tasks (a near-image node from the partition of each hash block it met another node in,
# a caption from each band), and only one is needed.
DISTINCT_BY = {"ids": ("group", "order"), "sha": ("group", "order"), "image": ("value", "cls", "order"),
               "image_edges": ("a", "a_cls", "b", "b_cls"), "text": ("value", "order"), "text_edges": ("a", "b"),
               "names": ("order",), "pixels": ("order",)}


class Resolver:
    """Takes the reduce outputs as they stream in, keeping only duplicated records, as arrays
    (tens of bytes a duplicated record, not Python objects), and applies the rules in order.
    Each table is compacted to its distinct rows whenever what came since the last compaction
    outgrows it: the rows the tasks repeat (2-3x at 1.6M records) are never all held."""

    COMPACT_AT = 65_536  # rows a table takes in before its first compaction

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.parts: dict[str, list[dict[str, Any]]] = {name: [] for name in DISTINCT_BY}
        self._compacted = dict.fromkeys(DISTINCT_BY, 0)  # rows in each table's first part, distinct
        self.groups = 0  # id groups are numbered as they come (each is whole in one partition)
        self.ref_hits: list[dict[int, RefHit]] = [{}, {}]  # evaluation sets, then earlier runs

    def add(self, family: str, *tables: pa.Table) -> None:
        # Every array kept is a copy: a view would pin the whole task result it came from (on
        # Ray, an object mapped from the object store) for as long as the resolver lives.
        members = tables[-1]
        if members.num_rows:
            orders = members.column("order").to_numpy().copy()
            _, once = np.unique(orders, return_index=True)  # one name per record
            ids = members.column("id")
            ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
            self._append("names", {"order": orders[once], "id": ids.take(pa.array(once)).cast(pa.string())})
            if "pixels" in members.column_names:
                self._append("pixels", {"order": orders[once], "pixels": members.column("pixels").to_numpy()[once]})
        if family == "ids" and members.num_rows:
            codes = _codes(members.column("id"))
            self._append("ids", {"group": codes + self.groups, "order": orders})
            self.groups += int(codes.max()) + 1
        elif family == "sha" and members.num_rows:
            self._append("sha", {"group": members.column("sha").to_numpy().copy().view(np.int64), "order": orders})
        elif family == "image":
            edges = tables[0]
            if members.num_rows:
                self._append("image", {"value": members.column("value").to_numpy().copy(), "cls": members.column("cls").to_numpy().copy(), "order": orders})
            if edges.num_rows:
                self._append("image_edges", {n: edges.column(n).to_numpy().copy() for n in ("a", "a_cls", "b", "b_cls")})
        elif family in ("text", "band"):
            if members.num_rows:
                self._append("text", {"value": members.column("text").to_numpy().copy(), "cls": np.zeros(members.num_rows, np.int8), "order": orders})
            if family == "band" and tables[0].num_rows:
                e = tables[0]
                zero = np.zeros(e.num_rows, np.int8)
                self._append("text_edges", {"a": e.column("a").to_numpy().copy(), "a_cls": zero, "b": e.column("b").to_numpy().copy(), "b_cls": zero})

    def _append(self, name: str, part: dict[str, Any]) -> None:
        parts = self.parts[name]
        parts.append(part)
        since = sum(len(p["order" if "order" in p else "a"]) for p in parts) - self._compacted[name]
        if since > max(self._compacted[name], self.COMPACT_AT):
            self._compact(name)

    def _compact(self, name: str) -> None:
        """The table's parts as one, each distinct row once (its first: names and pixels agree)."""
        parts = self.parts[name]
        whole = {f: (pa.concat_arrays([p[f] for p in parts]) if isinstance(parts[0][f], pa.Array) else np.concatenate([p[f] for p in parts]))
                 for f in parts[0]}
        first = first_of_each([whole[f] for f in DISTINCT_BY[name]])
        self.parts[name] = [{f: (c.take(pa.array(first)) if isinstance(c, pa.Array) else c[first]) for f, c in whole.items()}]
        self._compacted[name] = len(first)

    def add_reference_hits(self, kind: str, hits: dict[int, RefHit]) -> None:
        self.ref_hits[0 if kind == "eval" else 1].update(hits)

    def _column(self, name: str, field: str, dtype: Any) -> np.ndarray:
        return np.concatenate([p[field] for p in self.parts[name]] + [np.zeros(0, dtype)])

    def resolve(self) -> DecisionColumns:
        hit_orders = [np.fromiter(h.keys(), np.int64, count=len(h)) for h in self.ref_hits]
        for name in self.parts:
            if len(self.parts[name]) > 1:
                self._compact(name)
        id_rows = self._column("names", "order", np.int64)  # each record once
        every = np.unique(np.concatenate([id_rows, *hit_orders]))
        n = len(every)
        # an id and the pixels for every record we know of
        names = self.parts["names"]
        id_values = names[0]["id"] if names else pa.array([], pa.string())
        first_row = np.full(n, -1, np.int64)
        first_row[np.searchsorted(every, id_rows)] = np.arange(len(id_rows))
        pixels = np.zeros(n, np.int64)
        pixels[np.searchsorted(every, self._column("pixels", "order", np.int64))] = self._column("pixels", "pixels", np.int64)
        out = DecisionColumns(every, first_row, id_values)

        # 1. repeated ids: the first in input order keeps it
        g, o = self._column("ids", "group", np.int64), self._column("ids", "order", np.int64)
        if len(g):
            by = np.lexsort((o, g))
            g, o = g[by], o[by]
            first = np.r_[True, g[1:] != g[:-1]]
            keeper = o[np.maximum.accumulate(np.where(first, np.arange(len(o)), 0))]
            out.set(np.searchsorted(every, o[~first]), DUPLICATE_ID, np.searchsorted(every, keeper[~first]))
        # 2. copies of evaluation images, then of what earlier runs kept
        for hits in self.ref_hits:
            for order in sorted(hits):
                i = int(np.searchsorted(every, order))
                if out.reason[i] != NONE:
                    continue
                out.hits[order] = hits[order]
                if hits[order].flag:
                    out.flagged[i] = True
                else:
                    out.set(np.array([i]), REFERENCE, np.array([-1]))
        # 3. exact images: the most pixels, then the earliest, survives
        g, o = self._column("sha", "group", np.int64), self._column("sha", "order", np.int64)
        if len(g):
            pairs = np.unique(np.stack([g, np.searchsorted(every, o)], axis=1), axis=0)
            live = out.reason[pairs[:, 1]] == NONE
            self._survive(pairs[live, 0], pairs[live, 1], every, pixels, out, EXACT_IMAGE)
        # 4. near images: groups of live records joined by a node or an edge between nodes
        labels, members = self._components("image", "image_edges", every, out.reason != NONE)
        if len(members):
            self._survive(labels, members, every, pixels, out, NEAR_IMAGE)
        # 5. shared captions, among what is left: every member flagged, all but the first rejected on request
        labels, members = self._components("text", "text_edges", every, out.reason != NONE)
        if len(members):
            by = np.lexsort((every[members], labels))
            labels, members = labels[by], members[by]
            start = np.r_[True, labels[1:] != labels[:-1]]
            run = np.cumsum(start) - 1
            sizes = np.bincount(run)
            firsts = members[start][run]
            out.text_count[members] = sizes[run]
            out.text_first[members] = firsts
            if self.rules.text_action == "reject":
                others = members[members != firsts]
                out.set(others, DUPLICATE_TEXT, out.text_first[others])
        self._mark_clusters(out)
        return out

    CLUSTERS_SHOWN, MEMBERS_SHOWN = 6, 4  # duplicate clusters the report shows, and dropped members of each

    def _mark_clusters(self, out: DecisionColumns) -> None:
        """Mark the first image clusters (by their kept record's input order) for the report:
        the record that survives, and up to MEMBERS_SHOWN it replaced, each with its rule and
        the Hamming distance between its closest perceptual hash and the survivor's (mirror
        included). An exact copy of a record that went as a near copy belongs to the survivor."""
        image_rule = (out.reason == EXACT_IMAGE) | (out.reason == NEAR_IMAGE)
        dropped = np.flatnonzero(image_rule)
        if not len(dropped):
            return
        survivor = out.other[dropped]
        for _ in range(len(dropped)):  # follow chains to the record that stays (they are short)
            on = image_rule[survivor]
            if not on.any():
                break
            survivor = np.where(on, out.other[survivor], survivor)
        keepers = np.unique(survivor)[: self.CLUSTERS_SHOWN]
        value, cls = self._column("image", "value", np.uint64), self._column("image", "cls", np.int8)
        order = self._column("image", "order", np.int64)
        for k in keepers:
            members = dropped[survivor == k][: self.MEMBERS_SHOWN]
            out.shown[int(k)] = {"cluster": int(k), "role": "kept", "bits": None}
            mine = value[(order == out.every[k]) & (cls == WHOLE)]
            for m in members:
                theirs = value[(order == out.every[m]) & (cls == WHOLE)]
                bits = int(np.bitwise_count(mine[:, None] ^ theirs[None, :]).min()) if len(mine) and len(theirs) else None
                out.shown[int(m)] = {"cluster": int(k), "role": "dropped", "bits": bits}

    @staticmethod
    def _survive(labels: np.ndarray, members: np.ndarray, every: np.ndarray, pixels: np.ndarray, out: DecisionColumns, reason: int) -> None:
        """In each group of two or more (``labels``), all but the one with most pixels (then the
        earliest) go as ``reason``, naming it."""
        by = np.lexsort((every[members], -pixels[members], labels))
        labels, members = labels[by], members[by]
        first = np.r_[True, labels[1:] != labels[:-1]]
        keeper = members[np.maximum.accumulate(np.where(first, np.arange(len(members)), 0))]
        out.set(members[~first], reason, keeper[~first])

    def _components(self, nodes_name: str, edges_name: str, every: np.ndarray, dead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(component label, record index) of the live records in components of two or more:
        records joined by sharing a node, or by holding two nodes joined by an edge; a node no
        live record holds joins nothing."""
        value, cls = self._column(nodes_name, "value", np.uint64), self._column(nodes_name, "cls", np.int8)
        record = np.searchsorted(every, self._column(nodes_name, "order", np.int64))
        live = ~dead[record]
        value, cls, record = value[live], cls[live], record[live]
        if not len(record):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        by = np.lexsort((value, cls))
        keys_v, keys_c = value[by], cls[by]
        new = np.r_[True, (keys_v[1:] != keys_v[:-1]) | (keys_c[1:] != keys_c[:-1])]
        node_of_row = np.empty(len(by), np.int64)
        node_of_row[by] = np.cumsum(new) - 1
        uv, uc = keys_v[new], keys_c[new]
        n_rec = len(every)
        a = [record, n_rec + np.zeros(0, np.int64)]
        b = [n_rec + node_of_row, np.zeros(0, np.int64)]
        ev = self._column(edges_name, "a", np.uint64), self._column(edges_name, "a_cls", np.int8)
        fv = self._column(edges_name, "b", np.uint64), self._column(edges_name, "b_cls", np.int8)
        if len(ev[0]):
            na, oka = _find_nodes(uv, uc, *ev)
            nb, okb = _find_nodes(uv, uc, *fv)
            ok = oka & okb  # both nodes held by a live record
            a.append(n_rec + na[ok])
            b.append(n_rec + nb[ok])
        labels = components_of_edges(n_rec + len(uv), np.concatenate(a), np.concatenate(b))
        held = np.unique(record)
        lab = labels[held]
        counts = np.unique(lab, return_counts=True)
        many = np.isin(lab, counts[0][counts[1] > 1])
        return lab[many], held[many]


def _find_nodes(uv: np.ndarray, uc: np.ndarray, v: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of nodes (v, c) among the live nodes sorted by (class, value); and whether found."""
    pos = np.zeros(len(v), np.int64)
    ok = np.zeros(len(v), bool)
    for klass in np.unique(c):
        mine = c == klass
        lo, hi = np.searchsorted(uc, klass, "left"), np.searchsorted(uc, klass, "right")
        where = lo + np.searchsorted(uv[lo:hi], v[mine])
        found = (where < hi) & (uv[np.minimum(where, len(uv) - 1)] == v[mine]) if len(uv) else np.zeros(int(mine.sum()), bool)
        pos[mine], ok[mine] = where, found
    return pos, ok
