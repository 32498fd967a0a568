"""The hostile-input corpus: every input that once stopped a run, cost unbounded time or
memory, or wrote non-standard JSON, built here and run through ``recaption run``.

Each case must end as a named reject (or a kept pair), the run must go on, and the counts
must add up: nothing is lost.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recaption.cli import main
from recaption.limits import MAX_IMAGE_BYTES, MAX_RECORD_BYTES, MAX_TEXT_CHARS
from recaption.stages import STAGES
from recaption.stages.base import Stage
from tests.conftest import encode, noise_image, read_jsonl, with_lying_header

GOOD = '"image_path":"good.jpg","texts":["a colourful pattern"]'


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["run", *args, "--no-progress", *([] if "--workers" in args else ["--workers", "1"])])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def _rejects(out: Path) -> dict[str, dict]:
    """Every rejected record by id, from all the run's rejects files."""
    found = {}
    for path in sorted((out / "rejects").glob("*.jsonl")):
        for rec in read_jsonl(path):
            found[rec["image_id"]] = rec
    return found


def _accounted(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input"] == stats["output"] + stats["rejected"]
    return stats


def _standard_json(path: Path) -> None:
    """Every line of a JSONL output is standard JSON: no NaN, no Infinity, valid UTF-8."""
    text = path.read_bytes().decode("utf-8")
    for line in text.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{path.name} holds {c}"))


# Line -> the reject reason it must end as (None: kept).
JSONL_CASES: dict[str, tuple[str, str | None]] = {
    "meta_string": ('{"image_id":"meta_string",' + GOOD + ',"meta":"oops"}', "read/wrong_type"),
    "scores_string": ('{"image_id":"scores_string",' + GOOD + ',"scores":"abc"}', "read/wrong_type"),
    "scores_list": ('{"image_id":"scores_list",' + GOOD + ',"scores":[1,2]}', "read/wrong_type"),
    "origin_broken": ('{"image_id":"origin_broken",' + GOOD + ',"origin":"{bad"}', "read/malformed_json"),
    "captions_broken": ('{"image_id":"captions_broken",' + GOOD + ',"captions":"[x"}', "read/malformed_json"),
    "caption_unknown_key": ('{"image_id":"caption_unknown_key",' + GOOD + ',"captions":[{"text":"t","source":"s","evil":1}]}', "read/wrong_type"),
    "caption_bad_type": ('{"image_id":"caption_bad_type",' + GOOD + ',"captions":[{"text":5,"source":"s"}]}', "read/wrong_type"),
    "huge_int": ('{"image_id":"huge_int",' + GOOD + ',"n":' + "9" * 5000 + "}", "read/number_out_of_range"),
    "big_int": ('{"image_id":"big_int",' + GOOD + ',"n":' + "9" * 40 + "}", "read/number_out_of_range"),
    "deep_2000": ('{"image_id":"deep_2000",' + GOOD + ',"d":' + "[" * 2000 + "]" * 2000 + "}", "read/too_deep"),
    "deep_100": ('{"image_id":"deep_100",' + GOOD + ',"d":' + "[" * 100 + "]" * 100 + "}", "read/too_deep"),
    "lone_surrogate": ('{"image_id":"lone_surrogate","image_path":"good.jpg","texts":["\\ud800"]}', "read/invalid_unicode"),
    "texts_number": ('{"image_id":"texts_number","image_path":"good.jpg","texts":5}', "read/wrong_type"),
    "id_object": ('{"image_id":{"a":1},' + GOOD + "}", "read/wrong_type"),
    "not_object": ("[1, 2, 3]", "read/wrong_type"),
    "not_json": ("{this is not json", "read/malformed_json"),
    "long_text": ('{"image_id":"long_text","image_path":"good.jpg","texts":["' + "a " * MAX_TEXT_CHARS + '"]}', "read/text_too_long"),
    "dev_zero": ('{"image_id":"dev_zero","image_path":"/dev/zero","texts":["zeros"]}', "read/outside_input"),
    "dev_urandom": ('{"image_id":"dev_urandom","image_path":"/dev/urandom","texts":["noise"]}', "read/outside_input"),
    "fifo": ('{"image_id":"fifo","image_path":"pipe.jpg","texts":["a pipe"]}', "image_check/not_a_file"),
    "folder": ('{"image_id":"folder","image_path":"adir","texts":["a folder"]}', "image_check/not_a_file"),
    "missing": ('{"image_id":"missing","image_path":"nope.jpg","texts":["gone"]}', "image_check/missing_file"),
    "nul_in_path": ('{"image_id":"nul_in_path","image_path":"good\\u0000.jpg","texts":["a nul"]}', "image_check/unreadable_file"),
    "many_texts": ('{"image_id":"many_texts","image_path":"good.jpg","texts":' + json.dumps(["t"] * 1001) + "}", "read/too_many_texts"),
    # Kept, but nothing of theirs may leak into the output as it came.
    "own_reject": ('{"image_id":"own_reject","image_path":"good2.jpg","texts":["a second pattern"],"reject":{"foo":1}}', None),
    "nan": ('{"image_id":"nan","image_path":"good3.jpg","texts":["a third pattern"],"q":NaN,"r":-Infinity}', None),
    "hostile_ext": ('{"image_id":"hostile_ext","image_path":"good4.jpg","texts":["a fourth pattern"],"image_ext":"x/../../.."}', None),
}


@pytest.fixture()
def hostile_jsonl(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["good.jpg", "good2.jpg", "good3.jpg", "good4.jpg"]):
        (folder / name).write_bytes(encode(noise_image(i)))
    os.mkfifo(folder / "pipe.jpg")
    (folder / "adir").mkdir()
    lines = [line for line, _ in JSONL_CASES.values()]
    lines.append('{"image_id":"too_large","texts":["' + "b" * (MAX_RECORD_BYTES + 10) + '"]}')
    # A byte-order mark first, a blank line, and CRLF endings: all read as a person would expect.
    (folder / "pairs.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n")
    return folder / "pairs.jsonl"


def test_no_record_stops_a_run_and_each_gets_a_named_reason(hostile_jsonl: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    start = time.perf_counter()
    rc, _, err = _run([str(hostile_jsonl), str(out), "--recipe", "clean", "--set", "dedup.near_image=false"], capsys)
    assert time.perf_counter() - start < 60, "a single record cost unbounded time"
    assert rc == 0, err
    stats = _accounted(out)
    assert stats["input"] == len(JSONL_CASES) + 1
    rejects = _rejects(out)
    by_line = {rec["origin"]["line"]: rec for rec in rejects.values()}
    for line_no, (name, (_, reason)) in enumerate(JSONL_CASES.items(), start=1):
        rec = rejects.get(name) or by_line.get(line_no)
        if reason is None:
            assert rec is None, f"{name} was rejected: {rec and rec['reject']}"
        else:
            assert rec is not None, f"{name} was neither kept nor rejected"
            assert f"{rec['reject']['stage']}/{rec['reject']['reason']}" == reason, name
    assert by_line[len(JSONL_CASES) + 1]["reject"]["reason"] == "too_large"
    kept = {rec["image_id"]: rec for rec in read_jsonl(out / "data" / "part-00000.jsonl")}
    assert set(kept) == {"own_reject", "nan", "hostile_ext"}
    # An input's own reject field is kept for reference, never obeyed or counted.
    assert kept["own_reject"]["meta"]["previous_reject"] == {"foo": 1}
    assert not any(key.startswith("foo") for key in stats["rejects_by_reason"])
    assert kept["nan"]["meta"]["q"] is None and kept["nan"]["meta"]["r"] is None
    for path in list((out / "data").glob("*.jsonl")) + list((out / "rejects").glob("*.jsonl")):
        _standard_json(path)


def test_hostile_image_ext_never_reaches_a_file_name(hostile_jsonl: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc, _, err = _run([str(hostile_jsonl), str(out), "--recipe", "clean", "--output-format", "webdataset", "--set", "dedup.near_image=false"], capsys)
    assert rc == 0, err
    with tarfile.open(out / "data" / "part-00000.tar") as tar:
        names = tar.getnames()
    assert names and not any(".." in n or "/" in n for n in names), names


def test_a_record_over_the_size_limit_costs_bounded_memory(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(encode(noise_image(0)))
    with open(folder / "pairs.jsonl", "w") as fh:
        fh.write('{"image_id":"ok",' + GOOD + "}\n")
        fh.write('{"image_id":"huge","texts":["' + "x" * (64 * 1024 * 1024) + '"]}\n')  # 64 MB line
        fh.write('{"image_id":"after","image_path":"good.jpg","texts":["the same pattern again"]}\n')
    (folder / "small.jsonl").write_text('{"image_id":"ok",' + GOOD + "}\n")
    _run([str(folder / "small.jsonl"), str(tmp_path / "warm"), "--recipe", "clean"], capsys)  # imports done before measuring
    tracemalloc.start()
    try:
        rc, _, err = _run([str(folder / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "clean", "--set", "dedup.near_image=false"], capsys)
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert rc == 0, err
    assert peak_mib < 32, f"{peak_mib:.0f} MiB at the peak for a 64 MB record that is rejected unread"  # dedup alone takes ~18
    stats = _accounted(tmp_path / "out")
    assert stats["rejects_by_reason"]["read/too_large"] == 1
    assert (tmp_path / "out" / "report.html").stat().st_size < 2_000_000


def test_cr_only_line_endings_are_lines(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(encode(noise_image(i)))
    lines = [json.dumps({"image_id": f"r{i}", "image_path": f"{i}.jpg", "texts": [f"pattern {i}"]}) for i in range(3)]
    (folder / "pairs.jsonl").write_bytes("\r".join(lines).encode())
    rc, _, err = _run([str(folder / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "clean"], capsys)
    assert rc == 0, err
    assert _accounted(tmp_path / "out")["output"] == 3


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_webdataset_huge_members_deep_json_and_compression(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    image = encode(noise_image(1))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        _tar_member(tar, "a.jpg", encode(noise_image(0)))
        _tar_member(tar, "a.txt", b"a colourful pattern")
        # One key with many members over the limit: checked by the header, never read.
        for ext in ("jpg", "png", "webp", "bin", "bin"):
            _tar_member(tar, f"huge.{ext}", bytes(MAX_IMAGE_BYTES + 1))
        _tar_member(tar, "deep.jpg", image)
        _tar_member(tar, "deep.json", b'{"texts":["x"],"d":' + b"[" * 3000 + b"]" * 3000 + b"}")
        _tar_member(tar, "bigint.jpg", image)
        _tar_member(tar, "bigint.json", b'{"texts":["x"],"n":' + b"7" * 5000 + b"}")
        _tar_member(tar, "z.jpg", encode(noise_image(2)))
        _tar_member(tar, "z.txt", b"\xef\xbb\xbfanother pattern")
    # gzip-compressed although named .tar: read on purpose, under the same limits.
    (folder / "00000.tar").write_bytes(gzip.compress(raw.getvalue(), compresslevel=1))
    rc, _, err = _run([str(folder), str(tmp_path / "out"), "--recipe", "clean", "--set", "dedup.near_image=false"], capsys)
    assert rc == 0, err
    stats = _accounted(tmp_path / "out")
    assert stats["output"] == 2
    assert stats["rejects_by_reason"] == {"read/too_large": 1, "read/too_deep": 1, "read/number_out_of_range": 1}
    with tarfile.open(tmp_path / "out" / "data" / "part-00000.tar") as tar:
        texts = {m.name: tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".txt")}
    assert "another pattern" in "".join(texts.values()) and "\ufeff" not in "".join(texts.values())


def test_a_tar_header_that_lies_about_its_size_is_counted_not_swallowed(tmp_path: Path, capsys) -> None:
    """a.jpg's header claims the bytes of a.txt, b.jpg and b.txt too: tarfile reads them as a.jpg's.
    The lying sample is a reject and so is what it swallowed, counted; c is kept."""
    folder = tmp_path / "shards"
    folder.mkdir()
    members = [("a.jpg", encode(noise_image(0))), ("a.txt", b"a colourful pattern"), ("b.jpg", encode(noise_image(1))),
               ("b.txt", b"a second pattern"), ("c.jpg", encode(noise_image(2))), ("c.txt", b"a third pattern")]
    blob = with_lying_header(members, liar=0, swallow=3)  # a.jpg's data now runs up to c.jpg's header
    (folder / "00000.tar").write_bytes(bytes(blob))
    rc, _, err = _run([str(folder), str(tmp_path / "out"), "--recipe", "clean", "--set", "dedup.near_image=false"], capsys)
    assert rc == 0, err
    stats = _accounted(tmp_path / "out")
    assert stats["output"] == 1 and stats["rejects_by_reason"] == {"read/corrupt_shard": 2}
    details = [r["reject"]["detail"] for r in _rejects(tmp_path / "out").values()]
    assert any("swallow 3 following member(s)" in d for d in details)


def test_a_batch_is_cut_by_bytes_as_well_as_by_records() -> None:
    """A gzip bomb of a tar (each member within its limit, many of them) holds at most
    BATCH_BYTES of images in a worker's batch, whatever the batch size."""
    from recaption.record import Pair
    from recaption.runners.shards import batches

    big = [Pair(f"p{i}", bytes(40 << 20)) for i in range(10)]
    sizes = [len(b) for b in batches(iter(big), 64, max_bytes=100 << 20)]
    assert sizes == [3, 3, 3, 1]


def test_a_corrupt_parquet_row_group_costs_its_rows_not_the_run(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    rows = [{"image_id": f"p{i}", "image": encode(noise_image(i)), "texts": [f"pattern number {i}"]} for i in range(6)]
    path = folder / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3, compression="snappy")
    meta = pq.ParquetFile(path).metadata
    group = meta.row_group(1).column(1)  # the second group's image column
    start = group.dictionary_page_offset or group.data_page_offset
    blob = bytearray(path.read_bytes())
    blob[start + 20 : start + 60] = b"\xff" * 40  # damage the page, keep the footer
    path.write_bytes(bytes(blob))
    rc, _, err = _run([str(path), str(tmp_path / "out"), "--recipe", "clean", "--set", "dedup.near_image=false"], capsys)
    assert rc == 0, err
    stats = _accounted(tmp_path / "out")
    assert stats["output"] == 3
    assert stats["rejects_by_reason"] == {"read/corrupt_row_group": 3}


def test_parquet_rows_whose_struct_repeats_a_field_name_are_rejected_not_the_file(tmp_path: Path, capsys) -> None:
    """``meta`` with fields Foo, foo, foo: pyarrow will not make a dict of it. Those rows are
    rejects that keep what did convert (id, texts, image); a row of 50,000 meta keys is one
    reject as well (a record over the JSON reader's 1 MiB), and the other rows are kept."""
    folder = tmp_path / "pq"
    folder.mkdir()
    images = [encode(noise_image(i)) for i in range(4)]
    meta = pa.StructArray.from_arrays([pa.array([1, 2]), pa.array([3, 4]), pa.array([5, 6])], names=["Foo", "foo", "foo"])
    pq.write_table(pa.table({"image_id": ["d0", "d1"], "image": images[:2], "texts": [["a red kite"], ["a blue kite"]], "meta": meta}), folder / "a.parquet")
    wide = {f"k{i}": "v" * 20 for i in range(50_000)}
    rows = [{"image_id": "wide", "image": images[2], "texts": ["a green kite"], "meta": json.dumps(wide)},
            {"image_id": "fine", "image": images[3], "texts": ["a yellow kite"], "meta": json.dumps({"k": "v"})}]
    pq.write_table(pa.Table.from_pylist(rows), folder / "b.parquet")
    rc, _, err = _run([str(folder), str(tmp_path / "out"), "--recipe", "clean", "--set", "dedup.near_image=false"], capsys)
    assert rc == 0, err
    stats = _accounted(tmp_path / "out")
    assert stats["output"] == 1 and stats["rejects_by_reason"] == {"read/unreadable_column": 2, "read/too_large": 1}
    rejects = _rejects(tmp_path / "out")
    assert rejects["d0"]["texts"] == ["a red kite"] and "duplicate field names" in rejects["d0"]["reject"]["detail"]


def test_a_clean_run_whose_shard_keeps_nothing_finishes_in_every_format(tmp_path: Path, capsys) -> None:
    """Three content-free alt-texts fill the first shard: it keeps nothing, and a re-run resumes."""
    folder = tmp_path / "in"
    folder.mkdir()
    records = []
    for i in range(4):
        (folder / f"{i}.jpg").write_bytes(encode(noise_image(40 + i)))
        records.append({"image_id": f"r{i}", "image_path": f"{i}.jpg", "texts": ["IMG_0042.JPG" if i < 3 else "a red kite on a beach"]})
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for fmt in ("webdataset", "imagefolder", "parquet", "jsonl"):
        out = tmp_path / fmt
        args = [str(folder / "pairs.jsonl"), str(out), "--recipe", "clean", "--shard-size", "3", "--output-format", fmt]
        rc, _, err = _run(args, capsys)
        assert rc == 0, (fmt, err)
        assert _accounted(out)["output"] == 1
        assert _run(args, capsys)[0] == 0  # the re-run finds it done


# --- failures that hit every record stop the run with one line --------------------------------


class _AlwaysFails(Stage):
    """A stage whose setup is wrong: every record raises the same way."""

    name = "test_always_fails"

    def process(self, batch: list) -> None:
        raise IndexError("index out of range in self")


@pytest.fixture()
def twenty_pairs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    with open(folder / "pairs.jsonl", "w") as fh:
        for i in range(20):
            (folder / f"{i}.jpg").write_bytes(encode(noise_image(i)))
            fh.write(json.dumps({"image_id": f"i{i}", "image_path": f"{i}.jpg", "texts": [f"pattern {i}"]}) + "\n")
    return folder / "pairs.jsonl"


@pytest.fixture()
def always_fails() -> object:
    STAGES[_AlwaysFails.name] = _AlwaysFails
    yield _AlwaysFails
    del STAGES[_AlwaysFails.name]


def test_a_stage_failing_on_every_record_stops_the_run(twenty_pairs: Path, tmp_path: Path, always_fails, capsys) -> None:
    recipe = tmp_path / "fails.yaml"
    recipe.write_text("name: fails\nstages:\n  - clean_text:\n  - test_always_fails:\n")
    rc, _, err = _run([str(twenty_pairs), str(tmp_path / "out"), "--recipe", str(recipe)], capsys)
    assert rc == 1
    line = err.strip().splitlines()[-1]
    assert "stage 'test_always_fails' failed on its first 8 records with the same error (IndexError: index out of range in self)" in line
    # With the check off, the records are rejected and the run says it kept nothing.
    rc, _, err = _run([str(twenty_pairs), str(tmp_path / "out2"), "--recipe", str(recipe), "--stop-after-failures", "0"], capsys)
    assert rc == 1
    assert "nothing kept: all 20 pairs rejected as test_always_fails/error" in err


def test_a_run_that_keeps_nothing_says_why(twenty_pairs: Path, tmp_path: Path, capsys) -> None:
    moved = tmp_path / "elsewhere.jsonl"
    twenty_pairs.rename(moved)  # the JSONL moved away from its images
    rc, _, err = _run([str(moved), str(tmp_path / "out"), "--recipe", "clean"], capsys)
    assert rc == 1
    assert "all 20 pairs rejected as image_check/missing_file; images missing: is --image-root right" in err
    rc, _, err = _run([str(moved), str(tmp_path / "out2"), "--recipe", "clean", "--text-field", "caption"], capsys)
    assert rc == 1
    assert "read/missing_field" in err and "--text-field" in err


def test_outputs_follow_the_umask(twenty_pairs: Path, tmp_path: Path, capsys) -> None:
    old = os.umask(0o027)
    try:
        rc, _, err = _run([str(twenty_pairs), str(tmp_path / "out"), "--recipe", "clean"], capsys)
    finally:
        os.umask(old)
    assert rc == 0, err
    for path in [tmp_path / "out" / "stats.json", tmp_path / "out" / "report.html", *(tmp_path / "out" / "data").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o640, path
    for folder in (tmp_path / "out" / "data", tmp_path / "out" / "rejects", tmp_path / "out" / "_work"):
        assert folder.stat().st_mode & 0o777 == 0o750, folder


def _children() -> list[str]:
    import subprocess

    ps = subprocess.run(["ps", "-o", "pid=,stat=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if " ps -o " not in line]


def test_a_run_with_workers_leaves_no_process_behind(twenty_pairs: Path, tmp_path: Path, capsys) -> None:
    # multiprocessing's resource tracker used to outlive the run: orphaned at exit, a zombie
    # under an init that does not reap. (Compared with before: other tests may leave helpers.)
    pids_before = {line.split()[0] for line in _children()}
    rc, _, err = _run([str(twenty_pairs), str(tmp_path / "out"), "--recipe", "clean", "--workers", "2", "--shard-size", "5"], capsys)
    assert rc == 0, err
    assert [line for line in _children() if line.split()[0] not in pids_before and "resource_tracker" not in line] == []
    assert not [line for line in _children() if "resource_tracker" in line]


def test_a_dead_worker_leaves_no_zombie_behind() -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from recaption.runners.local import _stop_workers

    pool = ProcessPoolExecutor(2, mp.get_context("spawn"))
    with pytest.raises(BrokenProcessPool):
        pool.submit(os._exit, 1).result()  # a worker killed (for memory, say) mid-task
    _stop_workers(pool)
    assert not [line for line in _children() if line.split()[1].startswith("Z")]


def test_second_run_on_one_output_is_told_who_holds_it(twenty_pairs: Path, tmp_path: Path, capsys) -> None:
    from recaption.io.run_folder import RunFolder

    out = tmp_path / "out"
    assert _run([str(twenty_pairs), str(out), "--recipe", "clean"], capsys)[0] == 0
    with RunFolder(out).locked():  # as a run resuming it holds it
        rc, _, err = _run([str(twenty_pairs), str(out), "--recipe", "clean"], capsys)
        assert rc == 1 and f"is in use by another recaption run (pid {os.getpid()} on " in err
        rc, _, err = _run([str(twenty_pairs), str(out), "--recipe", "clean", "--overwrite"], capsys)
        assert rc == 1 and "in use" in err
    rc, _, err = _run([str(twenty_pairs), str(out), "--recipe", "clean"], capsys)
    assert rc == 0, err


def test_output_that_is_a_file_or_half_made_or_full(twenty_pairs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "a-file").write_text("x")
    rc, _, err = _run([str(twenty_pairs), str(tmp_path / "a-file"), "--recipe", "clean"], capsys)
    assert rc == 1 and "is a file; OUTPUT must be a folder" in err
    # Killed between making _work/ and writing run.json: the same command starts afresh.
    half = tmp_path / "half"
    (half / "_work").mkdir(parents=True)
    (half / "_work" / "plan.json").write_text("[")
    rc, _, err = _run([str(twenty_pairs), str(half), "--recipe", "clean"], capsys)
    assert rc == 0, err
    # The disk fills up: one line, and the run resumes once there is room.
    import errno

    from recaption.runners import shards

    real = shards.write_jsonl

    def full(path, records):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(shards, "write_jsonl", full)
    rc, _, err = _run([str(twenty_pairs), str(tmp_path / "full"), "--recipe", "clean"], capsys)
    assert rc == 1
    assert err.strip().splitlines()[-1].startswith("recaption: stopped: No space left on device (")
    monkeypatch.setattr(shards, "write_jsonl", real)
    rc, _, err = _run([str(twenty_pairs), str(tmp_path / "full"), "--recipe", "clean"], capsys)
    assert rc == 0, err


def test_the_report_never_embeds_a_long_text_whole(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    with open(folder / "pairs.jsonl", "w") as fh:
        for i in range(60):
            (folder / f"{i}.jpg").write_bytes(encode(noise_image(i)))
            fh.write(json.dumps({"image_id": f"i{i}", "image_path": f"{i}.jpg", "texts": [f"pattern{i} " + "word " * 3900]}) + "\n")
    rc, _, err = _run([str(folder / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "clean"], capsys)
    assert rc == 0, err
    report = (tmp_path / "out" / "report.html").read_text()
    assert "word " * 200 not in report
    assert len(report) < 1_500_000
