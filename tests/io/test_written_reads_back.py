"""Whatever a run writes, a run reads back: arbitrary pairs (what stages and servers can put
in them, past every limit of the readers) through every output format, then through our own
readers. A pair is either written, and then read back with no reject, or refused by the writer
with the reader's reason (``records.check_readable``): never written and then unreadable."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recaption.io import open_reader, open_writer
from recaption.io.base import ReaderOptions
from recaption.io.safejson import RecordProblem
from recaption.limits import MAX_ID_CHARS, MAX_JSON_DEPTH, MAX_TEXT_CHARS, MAX_TEXTS
from recaption.record import Caption, Pair
from tests.conftest import encode, noise_image

FORMATS = ("jsonl", "parquet", "webdataset", "imagefolder")
IMAGE = encode(noise_image(0, (32, 24)))

scalars = st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats() | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)


def _deep(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


# Knobs past the readers' limits, each drawn now and then.
texts = st.lists(st.text(max_size=40), max_size=3) | st.just(["x" * (MAX_TEXT_CHARS + 1)])
ids = st.text(min_size=1, max_size=30) | st.just("i" * (MAX_ID_CHARS + 1))
caption_counts = st.sampled_from([0, 1, 3, MAX_TEXTS + 1])
metas = st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=4) | st.just({"deep": _deep(MAX_JSON_DEPTH + 2)}) | st.just({"wide": "w" * (1 << 20)})


@st.composite
def pairs(draw: st.DrawFn) -> Pair:
    n = draw(caption_counts)
    captions = [Caption(draw(st.text(max_size=30)) if k < 3 else f"caption {k}", draw(st.sampled_from(["alt-text", "rules", "vlm:m"])), scores={"clip_score": 30.0})
                for k in range(n)]
    if captions:
        captions[0].selected = True
    return Pair(
        draw(ids), IMAGE, texts=draw(texts), captions=captions, image_ext="jpg",
        scores={"width": 32, "big": draw(st.integers(min_value=-(2**70), max_value=2**70))},
        meta=draw(metas),
    )


def _write_and_read(fmt: str, batch: list[Pair]) -> tuple[list[str], list[str], list[Pair]]:
    with tempfile.TemporaryDirectory() as tmp:
        writer = open_writer(fmt, Path(tmp) / "data")
        written, refused = [], []
        with writer.open_shard("part-00000") as add:
            for pair in batch:
                try:
                    add(pair)
                    written.append(pair.image_id)
                except RecordProblem as exc:  # the sink makes this a write reject with exc.reason
                    refused.append(exc.reason)
        writer.finish_dataset()
        reader = open_reader(Path(tmp) / "data", fmt, ReaderOptions())
        back = [p for shard in reader.plan() for p in reader.pairs(shard)] if written else []
        return written, refused, back


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_written_record_reads_back(fmt: str) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(pairs(), min_size=1, max_size=4))
    def check(batch: list[Pair]) -> None:
        written, _, back = _write_and_read(fmt, batch)
        assert [p.reject for p in back] == [None] * len(back), [p.reject for p in back if p.reject]
        assert len(back) == len(written)

    check()


def test_each_limit_is_refused_by_the_writer_with_the_readers_reason() -> None:
    past = {
        "a text over MAX_TEXT_CHARS": Pair("t", IMAGE, texts=["x" * (MAX_TEXT_CHARS + 1)], image_ext="jpg"),
        "more than MAX_TEXTS captions": Pair("c", IMAGE, captions=[Caption(f"c{k}", "rules") for k in range(MAX_TEXTS + 1)], image_ext="jpg"),
        "a record over 1 MiB": Pair("w", IMAGE, meta={"wide": "w" * (1 << 20)}, image_ext="jpg"),
        "meta deeper than MAX_JSON_DEPTH": Pair("d", IMAGE, meta={"deep": _deep(MAX_JSON_DEPTH + 2)}, image_ext="jpg"),
        "an integer past 64 bits": Pair("i", IMAGE, scores={"n": 2**70}, image_ext="jpg"),
        "an id over MAX_ID_CHARS": Pair("i" * (MAX_ID_CHARS + 1), IMAGE, image_ext="jpg"),
    }
    for fmt in FORMATS:
        written, refused, _ = _write_and_read(fmt, list(past.values()))
        assert written == [] and len(refused) == len(past), (fmt, written, refused)
