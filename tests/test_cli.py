import json
import re
import subprocess
import sys

from recaption.cli import main
from tests.conftest import make_pairs_dataset


def test_run_prints_a_summary_and_writes_everything(tmp_path, capsys):
    data = make_pairs_dataset(tmp_path / "in", 4, texts=["a colourful pattern", "#junk"])
    rc = main(["run", str(data), str(tmp_path / "out"), "--no-progress", "--workers", "1", "--recipe", "clean", "--set", "dedup.near_image=false"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "4 pairs read, 2 kept, 2 rejected" in out
    assert "clean_text/empty_after_cleaning" in out
    assert re.search(r"slowest stages: \w+ [\d.]+ s \([\d.]+ pairs/s\)", out)
    for name in ("stats.json", "report.html", "data/part-00000.jsonl", "rejects/part-00000.jsonl"):
        assert (tmp_path / "out" / name).exists(), name
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["rejects_by_reason"] == {"clean_text/empty_after_cleaning": 2}


def test_bad_recipe_fails_before_any_work(tmp_path, capsys):
    data = make_pairs_dataset(tmp_path / "in", 2)
    rc = main(["run", str(data), str(tmp_path / "out"), "--set", "image_check.min_sied=3"])
    assert rc == 2
    assert "did you mean 'min_side'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    rc = main(["run", str(tmp_path / "nope.jsonl"), str(tmp_path / "out")])
    assert rc == 2  # what the command line named is not there: a usage error
    assert capsys.readouterr().err.strip() == f"recaption: input {tmp_path / 'nope.jsonl'} does not exist"  # one line


def test_errors_end_each_command_with_one_line_and_its_exit_code(tmp_path, capsys):
    from recaption.errors import Interrupted, RecaptionError, UsageError
    from recaption.io.base import InputError
    from recaption.models.hf import ModelLoadError
    from recaption.recipe import RecipeError
    from recaption.runners.shards import RunError, RunInterrupted

    assert [e.exit_code for e in (RecaptionError("x"), UsageError("x"), Interrupted("x"))] == [1, 2, 130]
    assert all(issubclass(e, UsageError) for e in (InputError, RecipeError)) and issubclass(RunInterrupted, Interrupted)
    assert all(issubclass(e, RecaptionError) for e in (RunError, ModelLoadError))
    # Nested subcommands are real: each level has its own help, and `review DATASET` still serves.
    assert main(["review", "labelstudio", "import", str(tmp_path)]) == 2
    assert "give Label Studio's JSON export file" in capsys.readouterr().err
    assert main(["review", str(tmp_path / "missing"), "--no-browser"]) == 2
    assert main(["audit", "sample", str(tmp_path / "missing"), str(tmp_path / "s")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2  # one line each


def test_overwrite_starts_afresh_but_never_deletes_foreign_folders(tmp_path, capsys):
    data = make_pairs_dataset(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert main(["run", str(data), str(out), "--no-progress", "--workers", "1", "--recipe", "clean"]) == 0
    assert main(["run", str(data), str(out), "--no-progress", "--workers", "1", "--recipe", "clean", "--set", "image_check.min_side=8"]) == 1
    assert "other settings" in capsys.readouterr().err
    assert main(["run", str(data), str(out), "--no-progress", "--workers", "1", "--recipe", "clean", "--set", "image_check.min_side=8", "--overwrite"]) == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    assert main(["run", str(data), str(foreign), "--overwrite"]) == 2
    assert (foreign / "keep.txt").read_text() == "precious"


def test_console_script_and_recipes_listing():
    result = subprocess.run([sys.executable, "-m", "recaption.cli", "recipes"], capture_output=True, text=True, check=True)
    assert "clean: image_check > clean_text > sensitive_check > token_budget > dedup" in result.stdout


def test_the_summary_says_how_many_reject_reasons_it_leaves_out():
    from recaption.cli import _summary

    stats = {"input": 30, "output": 0, "rejected": 30, "rejects_by_reason": {f"s/r{i}": i + 1 for i in range(15)},
             "stages": {}, "output_format": "jsonl"}
    text = _summary(stats, __import__("pathlib").Path("out"), 1.0)
    assert "s/r14" in text and "s/r0" not in text and "6  in 3 more reasons" in text  # r0..r2: 1 + 2 + 3
