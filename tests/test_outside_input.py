"""No byte from outside the input's own tree enters an output (io.input_tree).

A record names its image by path, and a record is data: the process's environment (with a
secret in it), the password file, ``../`` and a symlink out of the folder are named as
images here, and run through every output format, with and without ``image_check``, through
``--embed-images`` and through every ``export`` target. None of their bytes may appear in
anything written; each such record is a reject (or an export's skipped line) naming
``outside_input``; and a run's own output still reads back, exports and re-runs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recaption.cli import main
from recaption.io import open_reader
from recaption.io.base import ReaderOptions
from recaption.io.input_tree import InputTree
from recaption.loaders.exports import FORMATS
from tests.conftest import encode, noise_image, read_jsonl, write_jsonl

SECRET = "sk-recaption-test-3c7f0a9d41e2b8"
OUTSIDE_MARK = b"recaption-outside-photo"  # a JPEG comment only the outside photo holds

NO_CHECK_RECIPE = """\
name: no_image_check
stages:
  - clean_text: {}
"""


@pytest.fixture()
def leaky_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pairs.jsonl inside in/: one good image, and records naming files outside in/."""
    monkeypatch.setenv("RECAPTION_TEST_SECRET", SECRET)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(encode(noise_image(1)))
    # A real photo outside the tree, reached by '..' and by a symlink from inside.
    (tmp_path / "private.jpg").write_bytes(encode(noise_image(2), comment=OUTSIDE_MARK))
    (folder / "link.jpg").symlink_to(tmp_path / "private.jpg")
    (folder / "passwd.jpg").symlink_to("/etc/passwd")
    records = [
        {"image_id": "good", "image_path": "good.jpg", "texts": ["a colourful pattern"]},
        {"image_id": "environ", "image_path": "/proc/self/environ", "texts": ["the environment"]},
        {"image_id": "passwd", "image_path": "/etc/passwd", "texts": ["the password file"]},
        {"image_id": "dotdot", "image_path": "../private.jpg", "texts": ["a private photo"]},
        {"image_id": "symlink", "image_path": "link.jpg", "texts": ["a linked photo"]},
        {"image_id": "symlink_passwd", "image_path": "passwd.jpg", "texts": ["a linked file"]},
    ]
    return write_jsonl(folder / "pairs.jsonl", records)


def _everything_written(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink())


def _assert_nothing_leaked(root: Path) -> None:
    written = _everything_written(root)
    assert SECRET.encode() not in written, "the environment's secret was copied into the output"
    assert b"root:x:0:0" not in written, "/etc/passwd was copied into the output"
    assert OUTSIDE_MARK not in written, "a photo from outside the input was copied into the output"


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    rc = main(["run", *args, "--no-progress", "--workers", "1"])
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc


def _reasons(out: Path) -> dict[str, str]:
    return {rec["image_id"]: f"{rec['reject']['stage']}/{rec['reject']['reason']}" for p in sorted((out / "rejects").glob("*.jsonl")) for rec in read_jsonl(p)}


@pytest.mark.parametrize("recipe", ["clean", "no_image_check"])
@pytest.mark.parametrize("fmt", ["webdataset", "imagefolder", "parquet-embedded"])
def test_no_file_outside_the_input_enters_a_run_output(leaky_input: Path, tmp_path: Path, recipe: str, fmt: str, capsys) -> None:
    recipe_path = tmp_path / "no_check.yaml"
    recipe_path.write_text(NO_CHECK_RECIPE)
    out = tmp_path / "out"
    extra = ["--output-format", "parquet", "--embed-images"] if fmt == "parquet-embedded" else ["--output-format", fmt]
    rc = _run([str(leaky_input), str(out), "--recipe", "clean" if recipe == "clean" else str(recipe_path), *extra], capsys)
    assert rc == 0
    _assert_nothing_leaked(out)
    reasons = _reasons(out)
    for name in ("environ", "passwd", "dotdot", "symlink", "symlink_passwd"):
        assert reasons[name] == "read/outside_input", (name, reasons)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["output"] == 1 and stats["input"] == 6
    assert str(leaky_input.parent) in stats["image_roots"]


def test_the_report_never_pictures_a_file_outside_the_input(leaky_input: Path, tmp_path: Path, capsys) -> None:
    """Not for a record refused for its path, nor for one the reader rejected for another reason
    (whose path was never checked): the report holds no thumbnail of the outside photo."""
    records = [json.loads(line) for line in leaky_input.read_text().splitlines()]
    records.append({"image_id": "too_many", "image_path": "../private.jpg", "texts": ["t"] * 1001})
    leaky_input.write_text("".join(json.dumps(r) + "\n" for r in records))
    Image.new("RGB", (96, 80), (255, 0, 255)).save(tmp_path / "private.jpg")  # the outside photo, unmistakable: magenta
    out = tmp_path / "out"
    assert _run([str(leaky_input), str(out), "--recipe", "clean"], capsys) == 0
    assert _reasons(out)["too_many"] == "read/too_many_texts"
    report = (out / "report.html").read_text()
    thumbs = [Image.open(io.BytesIO(base64.b64decode(m))).convert("RGB") for m in re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", report)]
    means = [tuple(int(c) for c in np.asarray(t).reshape(-1, 3).mean(axis=0)) for t in thumbs]
    assert thumbs and not any(r > 200 and g < 60 and b > 200 for r, g, b in means), means  # no magenta picture


def test_allow_outside_input_reads_a_real_image_but_never_a_kernel_file(leaky_input: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = _run([str(leaky_input), str(out), "--recipe", "clean", "--output-format", "webdataset", "--allow-outside-input"], capsys)
    assert rc == 0
    reasons = _reasons(out)
    # The user asked for them: read (the two are one photo, so dedup keeps one of them).
    assert reasons.get("dotdot") is None and reasons.get("symlink") == "dedup/exact_image"
    assert reasons["environ"] == "read/outside_input"  # /proc, /sys, /dev: never
    assert reasons["passwd"] == "image_check/not_an_image"
    assert SECRET.encode() not in _everything_written(out)
    assert b"root:x:0:0" not in _everything_written(out)


def test_a_writer_copies_only_images_by_their_bytes(tmp_path: Path, capsys) -> None:
    """With no image_check, a text file inside the tree named .jpg is not copied as an image."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(encode(noise_image(1)))
    (folder / "notes.jpg").write_text("root:x:0:0 not an image\n")
    pairs = write_jsonl(folder / "pairs.jsonl", [{"image_id": "good", "image_path": "good.jpg", "texts": ["a red kite over a beach"]},
                                                 {"image_id": "notes", "image_path": "notes.jpg", "texts": ["a green tractor in a field"]}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(NO_CHECK_RECIPE)
    out = tmp_path / "out"
    assert _run([str(pairs), str(out), "--recipe", str(recipe), "--output-format", "imagefolder"], capsys) == 0
    assert _reasons(out) == {"notes": "write/not_an_image"}
    assert b"root:x:0:0" not in _everything_written(out / "data")


@pytest.mark.parametrize("target", FORMATS)
def test_export_never_copies_a_file_outside_its_input(leaky_input: Path, tmp_path: Path, target: str, capsys) -> None:
    out = tmp_path / "export"
    assert main(["export", str(leaky_input), str(out), "--to", target]) == 0
    capsys.readouterr()
    _assert_nothing_leaked(out)
    skipped = {row["image_id"]: row["reason"] for row in read_jsonl(out / "skipped.jsonl")}
    assert skipped == dict.fromkeys(("environ", "passwd", "dotdot", "symlink", "symlink_passwd"), "outside_input")


def test_export_from_a_crafted_run_folder_is_refused_the_same(leaky_input: Path, tmp_path: Path, capsys) -> None:
    """A run folder is data too: one whose data and stats name /proc and '/' as roots."""
    run = tmp_path / "crafted"
    (run / "data").mkdir(parents=True)
    (run / "report.html").write_text("<html></html>")
    (run / "stats.json").write_text(json.dumps({"image_roots": ["/", "/proc", "/etc"], "input_path": "/"}))
    lines = [{"image_id": "environ", "image_path": "/proc/self/environ", "texts": ["x"]},
             {"image_id": "passwd", "image_path": "/etc/passwd", "texts": ["y"]}]
    write_jsonl(run / "data" / "part-00000.jsonl", lines)
    for target in FORMATS:
        out = tmp_path / f"export-{target}"
        assert main(["export", str(run), str(out), "--to", target]) == 0
        _assert_nothing_leaked(out)
    capsys.readouterr()


def test_a_runs_own_output_reads_back_exports_and_reruns(tmp_path: Path, capsys) -> None:
    """Untouched images of a run live in its input's tree, outside the run folder: the roots the
    run recorded count as inside for every tool that reads it back."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(encode(noise_image(10 + i)))
    pairs = write_jsonl(folder / "pairs.jsonl", [{"image_id": f"p{i}", "image_path": f"{i}.jpg", "texts": [f"pattern number {i}"]} for i in range(3)])
    first = tmp_path / "first"
    assert _run([str(pairs), str(first), "--recipe", "clean"], capsys) == 0
    assert json.loads((first / "stats.json").read_text())["output"] == 3
    again = tmp_path / "again"
    assert _run([str(first / "data"), str(again), "--recipe", "clean", "--output-format", "webdataset"], capsys) == 0
    assert json.loads((again / "stats.json").read_text())["output"] == 3
    third = tmp_path / "third"  # the second run's roots carry the first's on
    assert _run([str(again / "data"), str(third), "--recipe", "clean"], capsys) == 0
    assert json.loads((third / "stats.json").read_text())["output"] == 3
    exported = tmp_path / "export"
    assert main(["export", str(first), str(exported), "--to", "llava"]) == 0
    assert len(json.loads((exported / "llava.json").read_text())) == 3
    assert not (exported / "skipped.jsonl").exists()
    capsys.readouterr()


def test_the_tree_of_an_input() -> None:
    tree = InputTree((Path("/data/in"),))
    assert tree.refusal("/data/in/a.jpg") is None
    assert tree.refusal("/data/in/../other/a.jpg") is not None
    assert tree.refusal("/data/input-2/a.jpg") is not None  # a sibling whose name starts alike
    assert tree.refusal("/proc/self/environ") is not None
    assert InputTree((Path("/"),), allow_outside=True).refusal("/proc/self/environ") is not None
    assert InputTree((Path("/data/in"),), allow_outside=True).refusal("/etc/hosts") is None


def test_a_symlink_then_dotdot_is_resolved_as_the_system_does(tmp_path: Path) -> None:
    """``link/../secret.jpg`` with ``link`` -> ``/elsewhere/sub``: the system opens
    ``/elsewhere/secret.jpg``; folding ``link/..`` away as text would call it inside."""
    inside, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    inside.mkdir()
    (elsewhere / "secret.jpg").write_bytes(b"x")
    (inside / "secret.jpg").write_bytes(b"y")  # a decoy of the same name inside
    (inside / "link").symlink_to(elsewhere / "sub")
    tree = InputTree((inside,))
    assert tree.refusal(str(inside / "link" / ".." / "secret.jpg")) is not None
    assert tree.refusal(str(inside / "secret.jpg")) is None
    assert tree.refusal(str(inside / "link" / "..")) is not None


def test_every_reader_applies_the_tree(leaky_input: Path) -> None:
    reader = open_reader(leaky_input, None, ReaderOptions())
    refused = [p.image_id for shard in reader.plan() for p in reader.pairs(shard) if p.reject]
    assert sorted(refused) == sorted(["environ", "passwd", "dotdot", "symlink", "symlink_passwd"])
    assert os.environ["RECAPTION_TEST_SECRET"] == SECRET
