"""Fuzzing what reads input: any bytes, any JSON, any text. Nothing may raise; every record
comes out as a Pair (kept or rejected with a reason); whatever is written back is standard
JSON that reads back. Runs in well under a minute."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recaption.io.base import InputShard, ReaderOptions
from recaption.io.jsonl import JsonlReader, JsonlWriter, iter_lines, write_jsonl
from recaption.io.records import pair_from_record
from recaption.io.webdataset import WebDatasetReader, split_key
from recaption.text.clean import AltTextRules
from recaption.text.sensitive import SensitiveAttributeFilter

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Records shaped like ours, with any value in any field: where the crash sites were.
OWN_KEYS = ["image_id", "image_path", "texts", "captions", "scores", "meta", "origin", "reject", "image_ext", "caption", "key", "text", "image"]
records = st.dictionaries(st.sampled_from(OWN_KEYS) | st.text(max_size=8), json_values | st.text().map(json.dumps), max_size=8)


def _standard(text: str) -> None:
    for line in filter(None, text.split("\n")):  # not splitlines(): U+0085 and U+2028 may stand inside a JSON string
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(AssertionError(f"non-standard JSON {c}")))


def _round_trip(pairs: list) -> None:
    """Kept pairs through the writer, rejected ones through the rejects writer: both standard JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        kept = [p for p in pairs if p.reject is None]
        JsonlWriter(Path(tmp)).write("part-00000", kept)
        write_jsonl(Path(tmp) / "rejects.jsonl", [p.to_dict() for p in pairs if p.reject is not None])
        for path in Path(tmp).glob("*.jsonl"):
            _standard(path.read_bytes().decode("utf-8"))
        back = list(JsonlReader(Path(tmp) / "part-00000.jsonl").read(InputShard(0, "x", {"file": str(Path(tmp) / "part-00000.jsonl"), "offset": 0, "first_line": 1, "lines": len(kept)})))
        assert [p.image_id for p in back] == [p.image_id for p in kept]
        assert all(p.reject is None for p in back), [p.reject for p in back]


@FUZZ
@given(st.lists(records, min_size=1, max_size=5))
def test_any_record_becomes_a_pair_and_writes_back(recs: list[dict]) -> None:
    pairs = [pair_from_record(r, ReaderOptions(), {"line": i}, None, f"f:{i}") for i, r in enumerate(recs)]
    assert len(pairs) == len(recs)
    _round_trip(pairs)


@FUZZ
@given(st.lists(st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode()) | records.map(lambda r: json.dumps(r).encode()), min_size=1, max_size=6),
       st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_bytes_in_a_jsonl_file(lines: list[bytes], newline: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(newline.join(lines))
        reader = JsonlReader(path, ReaderOptions(shard_size=2))
        pairs = [p for shard in reader.plan() for p in reader.read(shard)]
        with open(path, "rb") as fh:
            non_blank = sum(1 for line, _ in iter_lines(fh) if line is None or line.strip())
        assert len(pairs) == non_blank
        _round_trip(pairs)


@FUZZ
@given(st.dictionaries(st.sampled_from(["a.jpg", "a.txt", "a.json", "a.png", "b.json", "b.txt", "../c.txt", "d/e.json"]), st.binary(max_size=60), min_size=1))
def test_any_webdataset_members(members: dict[str, bytes]) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "00000.tar"
        path.write_bytes(raw.getvalue())
        pairs = list(WebDatasetReader(path).read(InputShard(0, "part-00000", {"file": str(path)})))
        keys = [split_key(name)[0] for name in members]  # a sample is a run of members with one key
        assert len(pairs) == sum(1 for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k)
        for p in pairs:
            assert p.reject is not None or p.image is not None or p.texts is not None


RULES = AltTextRules()
SENSITIVE = SensitiveAttributeFilter()


@FUZZ
@given(st.text(max_size=300))
def test_text_rules_take_any_text(text: str) -> None:
    cleaned = RULES.clean(text)
    assert isinstance(cleaned.text, str) and cleaned.text == cleaned.text.strip()
    result = SENSITIVE.check(cleaned.text)
    assert isinstance(result.text, str)


words = st.sampled_from(["a", "the", "black", "smiling", "woman", "man", "with", "hair", "IMG_1234.jpg", "12-34", "@me", "#tag", "by", "photo",
                         "(c)", "2019-05-12", "+1 555 123 4567", "x@y.com", "www.a.com", ",", ".", "  ", "&amp;", "<b>", "blonde", "who", "is", "happy"])


@FUZZ
@given(st.lists(words, max_size=40).map(" ".join))
def test_text_rules_take_any_mix_of_the_words_they_look_for(text: str) -> None:
    cleaned = RULES.clean(text)
    SENSITIVE.check(cleaned.text)
    SENSITIVE.check(text)
