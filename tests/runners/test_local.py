"""The main job end to end: accounting, formats, parallel workers, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recaption.io.base import ReaderOptions
from recaption.recipe import load_recipe
from recaption.runners.shards import RunConfig, RunError
from tests.conftest import make_pairs_dataset, noise_image, read_jsonl, run_locally, write_jsonl


def run(input_path, out, recipe="clean", overrides=(), workers=1, **kwargs):
    opts = ReaderOptions(shard_size=kwargs.pop("shard_size", 1000))
    config = RunConfig(str(input_path), str(out), load_recipe(recipe, list(overrides)), reader=opts, workers=workers, **kwargs)
    return run_locally(config)


def kept_records(out: Path) -> list[tuple]:
    rows = []
    for f in sorted((out / "data").glob("*.jsonl")):
        rows += [(r["image_id"], r["caption"], r["scores"].get("sha256")) for r in read_jsonl(f)]
    return rows


def rejected_records(out: Path) -> list[tuple]:
    rows = []
    for f in sorted((out / "rejects").glob("*.jsonl")):
        rows += [(r["image_id"], r["reject"]["stage"], r["reject"]["reason"]) for r in read_jsonl(f)]
    return sorted(rows)


def test_demo_run_accounts_for_every_record(demo_dataset, tmp_path):
    stats = run(demo_dataset, tmp_path / "out")
    n_lines = sum(1 for _ in open(demo_dataset, "rb"))
    assert stats["input"] == n_lines
    assert stats["input"] == stats["output"] + stats["rejected"]
    assert stats["rejected"] == sum(stats["rejects_by_reason"].values()) == len(rejected_records(tmp_path / "out"))
    assert stats["output"] == len(kept_records(tmp_path / "out"))
    expected = {
        "read/malformed_json", "read/non_utf8", "read/wrong_type",
        "image_check/truncated", "image_check/zero_bytes", "image_check/not_an_image", "image_check/missing_file",
        "image_check/decompression_bomb", "image_check/too_small", "image_check/aspect_ratio",
        "clean_text/empty_after_cleaning", "dedup/duplicate_id", "dedup/exact_image", "dedup/near_image",
    }
    assert expected <= set(stats["rejects_by_reason"])
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert on_disk["input"] == stats["input"] and on_disk["rejects_by_reason"] == stats["rejects_by_reason"]
    kept = {r["image_id"]: r for r in read_jsonl(tmp_path / "out" / "data" / "part-00000.jsonl")}
    assert kept["generic-1"]["scores"]["text_dup_count"] == 2  # flagged, not dropped
    assert "mode_CMYK" in kept["saucer-cmyk"]["meta"]["image_rewritten"]
    rewritten = tmp_path / "out" / "data" / kept["saucer-cmyk"]["image_path"]
    assert rewritten.exists()  # image_path is relative to the JSONL's folder
    assert Path(kept["chelsea"]["image_path"]).is_absolute()  # untouched images point at the original
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    # A record rejected in the second pass still says where it came from in the input.
    dups = read_jsonl(tmp_path / "out" / "rejects" / "part-00000.dedup.jsonl")
    assert dups and all(r["origin"]["file"] == str(demo_dataset) and r["origin"]["line"] > 0 for r in dups)


def test_two_workers_give_the_same_result_as_one(tmp_path):
    data = make_pairs_dataset(tmp_path / "in", 40, texts=["a pattern", "IMG_0001.JPG", "another pattern, quite colourful"])
    one = run(data, tmp_path / "one", workers=1, shard_size=7)
    two = run(data, tmp_path / "two", workers=2, shard_size=7)
    assert one["input"] == two["input"] == 40
    assert kept_records(tmp_path / "one") == kept_records(tmp_path / "two")
    assert rejected_records(tmp_path / "one") == rejected_records(tmp_path / "two")
    assert one["rejects_by_reason"] == two["rejects_by_reason"]


@pytest.mark.parametrize("out_format", ["webdataset", "parquet", "imagefolder"])
def test_output_format_choice_and_round_trip(tmp_path, out_format):
    data = make_pairs_dataset(tmp_path / "in", 6)
    stats = run(data, tmp_path / "out", output_format=out_format, overrides=["dedup.near_image=false"])
    assert stats["output_format"] == out_format and stats["output"] == 6
    # The output is itself a valid input: a second run reads it back in the same format.
    again = run(tmp_path / "out" / "data", tmp_path / "again", overrides=["dedup.near_image=false"])
    assert again["input"] == 6 and again["output"] == 6 and again["input_format"] == out_format


def test_rerun_of_a_finished_run_changes_nothing_and_other_settings_are_refused(tmp_path):
    data = make_pairs_dataset(tmp_path / "in", 5)
    first = run(data, tmp_path / "out")
    before = kept_records(tmp_path / "out")
    second = run(data, tmp_path / "out")
    assert kept_records(tmp_path / "out") == before
    assert {k: v for k, v in second.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
    with pytest.raises(RunError, match="other settings .*recipe"):
        run(data, tmp_path / "out", overrides=["image_check.min_side=10"])
    (tmp_path / "notours").mkdir()
    (tmp_path / "notours" / "file.txt").write_text("x")
    with pytest.raises(RunError, match="not empty"):
        run(data, tmp_path / "notours")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "recaption.cli", *args]


def _wait_for_first_shards(proc: subprocess.Popen, out: Path, n: int) -> None:
    """Wait until a real run has finished ``n`` first-pass shards and is still running."""
    done = out / "_work" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if done.exists() and len(list(done.glob("seg0-*.json"))) >= n:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be stopped; make the data set bigger"


def _start_and_stop(data: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start a real run, wait until some shards are done, then stop it with ``sig``."""
    cmd = _cli("run", str(data), str(out), "--recipe", "clean", "--shard-size", "5", "--workers", "2", "--no-progress")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_first_shards(proc, out, 4)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, sig)  # a crash: the workers die too, nobody cleans up
    else:
        proc.send_signal(sig)  # Ctrl-C
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_resume_after_stop_loses_and_duplicates_nothing(tmp_path, sig):
    texts = ["a colourful pattern", "a colourful pattern", "pattern with a very long caption, " * 8, "#tag only"]
    data = make_pairs_dataset(tmp_path / "in", 200, texts=texts)
    # Larger images make each shard take a moment, so that the stop lands part way.
    for i in range(200):
        noise_image(i, (900, 700)).save(tmp_path / "in" / "images" / f"{i:05d}.jpg", quality=95)
    write_jsonl(data, [line for line in open(data).read().splitlines()] + ["{broken"])

    reference = tmp_path / "reference"
    subprocess.run(_cli("run", str(data), str(reference), "--recipe", "clean", "--shard-size", "5", "--workers", "2", "--no-progress"), check=True, capture_output=True)

    out = tmp_path / "out"
    stopped = _start_and_stop(data, out, sig)
    assert stopped.returncode != 0
    if sig == signal.SIGINT:
        assert stopped.returncode == 130 and "run the same command again to resume" in stopped.stderr
    assert not (out / "stats.json").exists()
    resumed = subprocess.run(_cli("run", str(data), str(out), "--recipe", "clean", "--shard-size", "5", "--workers", "2", "--no-progress"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.rglob(".*.tmp"))
    assert kept_records(out) == kept_records(reference)
    assert rejected_records(out) == rejected_records(reference)
    stats = json.loads((out / "stats.json").read_text())
    ref = json.loads((reference / "stats.json").read_text())
    assert stats["input"] == ref["input"] == 201
    assert stats["input"] == stats["output"] + stats["rejected"]
    assert stats["rejects_by_reason"] == ref["rejects_by_reason"]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the worker processes")
def test_a_worker_killed_for_memory_fails_the_run_clearly_and_the_rerun_finishes(tmp_path):
    data = make_pairs_dataset(tmp_path / "in", 120)
    for i in range(120):
        noise_image(i, (900, 700)).save(tmp_path / "in" / "images" / f"{i:05d}.jpg", quality=95)
    out = tmp_path / "out"
    cmd = _cli("run", str(data), str(out), "--recipe", "clean", "--shard-size", "5", "--workers", "2", "--no-progress")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_first_shards(proc, out, 2)
    workers = [k for k in _children(proc.pid) if "spawn" in Path(f"/proc/{k}/cmdline").read_text()]
    assert workers, "found no worker process to kill"
    os.kill(workers[0], signal.SIGKILL)  # what the kernel's OOM killer does
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "a worker process died" in stderr and "re-run the same command" in stderr
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input"] == 120 == stats["output"] + stats["rejected"]


def test_default_recipe_writes_new_captions_from_tags(demo_dataset, tmp_path):
    stats = run(demo_dataset, tmp_path / "out", recipe="default")
    assert stats["input"] == stats["output"] + stats["rejected"]
    assert {"ocr", "classify", "nsfw", "nsfw_filter", "compose_caption", "sensitive_check"} <= set(stats["stages"])
    kept = {r["image_id"]: r for r in read_jsonl(tmp_path / "out" / "data" / "part-00000.jsonl")}
    chelsea = kept["chelsea"]
    selected = [c for c in chelsea["captions"] if c["selected"]]
    assert len(selected) == 1 and selected[0]["source"] == "rules"
    assert chelsea["caption"] == selected[0]["text"] == "a photo of Chelsea the tabby cat looking at you"
    assert "cat" in {t["noun"] for t in chelsea["meta"]["tags"]["classify"]["value"]}
    assert kept["page-gif"]["meta"]["tags"]["ocr"]["value"]  # the scanned page's text was read
    astronaut = kept["astronaut"]["caption"]
    assert "smiling" not in astronaut.lower() and "brown" not in astronaut.lower()  # sensitive_check ran on it
    assert all(r["scores"]["nsfw"] < 0.6 for r in kept.values())
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Threshold what-if" in report and "imagenet_top1_p" in report
