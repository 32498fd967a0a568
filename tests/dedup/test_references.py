"""Dedup against what earlier runs kept, and against evaluation images, through the command line."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import ImageOps

from recaption.cli import main
from recaption.dedup.index import ReferenceIndex, read_index
from recaption.record import Pair
from recaption.stages.base import StageError
from recaption.stages.dedup import Dedup
from tests.conftest import noise_image, read_jsonl, write_jsonl


def rejects(out: Path) -> dict[str, dict]:
    return {r["image_id"]: r["reject"] for f in sorted((out / "rejects").glob("*.jsonl")) for r in read_jsonl(f)}


def kept_ids(out: Path) -> set[str]:
    return {r["image_id"] for f in (out / "data").glob("*.jsonl") for r in read_jsonl(f)}


def dataset(folder: Path, images: dict[str, object]) -> Path:
    (folder / "images").mkdir(parents=True)
    records = []
    for image_id, img in images.items():
        img.save(folder / "images" / f"{image_id}.jpg", quality=92)
        records.append({"image_id": image_id, "image_path": f"images/{image_id}.jpg", "texts": [f"a picture called {image_id} of colourful shapes"]})
    return write_jsonl(folder / "pairs.jsonl", records)


def run(data: Path, out: Path, *sets: str) -> int:
    args = ["run", str(data), str(out), "--no-progress", "--workers", "1", "--recipe", "clean"]
    for s in sets:
        args += ["--set", s]
    return main(args)


@pytest.fixture
def eval_set(tmp_path):
    """Six evaluation images in a plain folder (no captions at all)."""
    folder = tmp_path / "eval"
    folder.mkdir()
    for i in range(6):
        noise_image(100 + i, (128, 96)).save(folder / f"eval{i}.jpg", quality=95)
    return folder


def test_index_build_and_info(tmp_path, eval_set, capsys):
    index = tmp_path / "eval.parquet"
    (eval_set / "broken.jpg").write_bytes(b"not an image")
    assert main(["index", "build", str(eval_set), "-o", str(index), "--kind", "eval", "--name", "my-test-set", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 images indexed, 1 skipped (image_check/not_an_image: 1)" in out
    ix = read_index(index)
    assert len(ix) == 6 and ix.has_phash.all() and ix.has_mirror.all() and (ix.sha != 0).all()
    assert ix.sources[0]["name"] == "my-test-set" and ix.sources[0]["kind"] == "eval"
    assert main(["index", "info", str(index)]) == 0
    assert "my-test-set (eval): 6 images" in capsys.readouterr().out
    # clear refusals
    assert main(["index", "build", str(eval_set), "-o", str(tmp_path / "x.idx")]) == 2
    assert main(["index", "build", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.parquet")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["index", "info", str(eval_set / "eval0.jpg")]) == 1


def test_training_pairs_that_copy_evaluation_images_are_rejected_or_flagged(tmp_path, eval_set, capsys):
    index = tmp_path / "eval.parquet"
    assert main(["index", "build", str(eval_set), "-o", str(index), "--kind", "eval", "--no-progress"]) == 0
    originals = {f"eval{i}": noise_image(100 + i, (128, 96)) for i in range(6)}
    train = dataset(tmp_path / "train", {
        "copy": originals["eval0"],  # re-encoded at another quality: a near copy
        "smaller": originals["eval1"].resize((96, 72)),
        "flipped": ImageOps.mirror(originals["eval2"]),
        **{f"new{i}": noise_image(i, (128, 96)) for i in range(5)},
    })
    # an exact copy, byte for byte
    (tmp_path / "train" / "images" / "exact.jpg").write_bytes((eval_set / "eval3.jpg").read_bytes())
    with open(train, "a") as fh:
        fh.write(json.dumps({"image_id": "exact", "image_path": "images/exact.jpg", "texts": ["an exact copy of shapes"]}) + "\n")

    out = tmp_path / "out"
    assert run(train, out, f"dedup.eval_sets=[{index}]") == 0
    why = rejects(out)
    assert {k for k, r in why.items() if r["reason"] == "contaminates_eval"} == {"copy", "smaller", "flipped", "exact"}
    assert why["exact"]["detail"] == "exact copy of 'eval3' in eval"
    assert why["flipped"]["detail"].startswith("mirror image of 'eval2' in eval")
    assert kept_ids(out) == {f"new{i}" for i in range(5)}
    stats = json.loads((out / "stats.json").read_text())
    found = stats["findings"]["dedup"]["contaminates_eval"]
    assert found["count"] == 4 and {row[0] for row in found["rows"]} == {"copy", "smaller", "flipped", "exact"}
    report = (out / "report.html").read_text()
    assert "Copies of evaluation images" in report and "eval2" in report

    flagged = tmp_path / "flagged"
    assert run(train, flagged, f"dedup.eval_sets=[{index}]", "dedup.eval_action=flag") == 0
    kept = {r["image_id"]: r for f in (flagged / "data").glob("*.jsonl") for r in read_jsonl(f)}
    assert len(kept) == 9 and kept["exact"]["meta"]["contaminates_eval"] == "eval:eval3"
    assert "contaminates_eval" not in kept["new0"]["meta"]


def test_a_second_run_rejects_what_the_first_kept(tmp_path):
    first = dataset(tmp_path / "a", {f"p{i}": noise_image(i, (128, 96)) for i in range(6)})
    assert run(first, tmp_path / "run-a") == 0
    second = dataset(tmp_path / "b", {
        **{f"again{i}": noise_image(i, (128, 96)) for i in range(3)},  # the same bytes as what run-a kept
        "again1": noise_image(1, (128, 96)).resize((112, 84)),  # a near copy
        **{f"q{i}": noise_image(50 + i, (128, 96)) for i in range(4)},
    })
    out = tmp_path / "run-b"
    # a run folder directly, no index built
    assert run(second, out, f"dedup.against=[{tmp_path / 'run-a'}]") == 0
    why = rejects(out)
    assert {k: r["reason"] for k, r in why.items()} == {f"again{i}": "seen_before" for i in range(3)}
    assert why["again0"]["detail"] == "exact copy of 'p0' in run-a"
    assert why["again1"]["detail"].startswith("near copy of 'p1' in run-a (")
    assert kept_ids(out) == {f"q{i}" for i in range(4)}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stages"]["dedup"]["metrics"]["seen_before"] == 3


def test_tasks_read_a_run_folder_reference_indexed_once_on_the_driver(tmp_path):
    from recaption.dedup.index import is_index_file
    from recaption.runners.task_pools import InProcessTasks

    first = dataset(tmp_path / "a", {f"p{i}": noise_image(i, (128, 96)) for i in range(4)})
    assert run(first, tmp_path / "run-a") == 0
    stage = Dedup(against=[str(tmp_path / "run-a")], near_text=False)
    sigs = [(f"0:{i}", stage.signature(Pair(f"x{i}", None, texts=["t"], scores={"sha256": f"{i + 1:064x}", "phash": f"{i:016x}", "width": 9, "height": 9})))
            for i in range(3)]
    shard = tmp_path / "sig.jsonl"
    shard.write_text("".join(json.dumps(list(s)) + "\n" for s in sigs))
    seen = []

    class Recording(InProcessTasks):
        def map(self, fn, calls):
            seen.extend([(p, is_index_file(p)) for p in args[1].against] for args in calls if fn.__name__ == "map_shard")
            return super().map(fn, calls)

    stage.decide_in_tasks(Recording(), [(0, str(shard))], str(tmp_path / "work"), 3)
    assert seen and all(a == [(str(tmp_path / "work" / "references" / "against-0.parquet"), True)] for a in seen)  # an index, not the folder
    assert stage.against == [str(tmp_path / "run-a")]  # the stage itself is left as the recipe made it


def test_bad_reference_paths_are_refused_before_the_run(tmp_path, capsys):
    with pytest.raises(StageError, match="no such file or folder"):
        Dedup(against=[str(tmp_path / "gone.parquet")])
    with pytest.raises(StageError, match="list of paths"):
        Dedup(eval_sets=[3])
    not_an_index = tmp_path / "plain.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1]}), not_an_index)
    d = Dedup(against=[str(not_an_index)])
    pair = Pair("x", None, texts=["t"], scores={"sha256": "ab" * 32, "phash": "0f" * 8, "width": 10, "height": 10})
    with pytest.raises(StageError, match="dedup.against"):
        d.decide([("0:0", d.signature(pair))])


def test_reference_decision_ties_go_to_the_nearest_then_the_earliest(tmp_path):
    ref = ReferenceIndex(
        np.zeros(3, np.int32), pa.array(["far", "near", "near-too"]), np.array([1, 2, 3], np.uint64),
        np.array([0b1111, 0b1, 0b1], np.uint64), np.ones(3, bool), np.zeros(3, np.uint64), np.zeros(3, bool),
        sources=[{"name": "ref", "kind": "kept", "records": 3, "path": "x"}],
    )
    path = tmp_path / "ref.parquet"
    ref.save(path)
    d = Dedup(against=[str(path)], near_text=False)
    pair = Pair("x", None, texts=["t"], scores={"sha256": "ff" * 32, "phash": f"{0:016x}", "width": 10, "height": 10})
    decision = d.decide([("0:0", d.signature(pair))])["0:0"]
    assert decision.reject == ("seen_before", "near copy of 'near' in ref (1 bits)")


def test_a_stored_hash_past_64_bits_is_hashed_again_not_a_traceback(tmp_path, capsys):
    """A run folder whose records carry a 40-hex-digit phash (crafted, or another tool's)."""
    data = dataset(tmp_path / "a", {f"s{i}": noise_image(300 + i) for i in range(3)})
    records = read_jsonl(data)
    records[0]["scores"] = {"sha256": "ab" * 32, "phash": "f" * 40, "phash_mirror": "0" * 16}
    records[1]["scores"] = {"sha256": "zz-not-hex", "phash": -5}
    write_jsonl(data, records)
    index = tmp_path / "ix.parquet"
    assert main(["index", "build", str(data), "-o", str(index), "--no-progress"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    ix = read_index(index)
    assert len(ix) == 3 and ix.has_phash.all()  # the three images hashed by the image check


def _crafted(path: Path, table: pa.Table, meta: object) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(table.replace_schema_metadata({b"recaption_index": json.dumps(meta).encode()}), path)
    return path


CRAFTED = {
    "missing_columns": (lambda: pa.table({"source": pa.array([0], pa.int32()), "id": ["a"]}), {"version": 1, "sources": [{"name": "x"}]}),
    "wrong_types": (lambda: pa.table({"source": ["zero"], "id": ["a"], "sha": ["x"], "phash": [1.5], "has_phash": [True], "mirror": [1], "has_mirror": [True]}),
                    {"version": 1, "sources": [{"name": "x"}]}),
    "source_out_of_range": (lambda: pa.table({"source": pa.array([7], pa.int32()), "id": ["a"], "sha": pa.array([1], pa.uint64()), "phash": pa.array([1], pa.uint64()),
                                              "has_phash": [True], "mirror": pa.array([1], pa.uint64()), "has_mirror": [True]}), {"version": 1, "sources": [{"name": "x"}]}),
    "sources_not_a_list": (lambda: pa.table({"source": pa.array([0], pa.int32())}), {"version": 1, "sources": "x"}),
    "nulls": (lambda: pa.table({"source": pa.array([0], pa.int32()), "id": ["a"], "sha": pa.array([None], pa.uint64()), "phash": pa.array([1], pa.uint64()),
                                "has_phash": [True], "mirror": pa.array([1], pa.uint64()), "has_mirror": [True]}), {"version": 1, "sources": [{"name": "x"}]}),
    "meta_not_an_object": (lambda: pa.table({"source": pa.array([0], pa.int32())}), [1, 2]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_index_is_one_line_in_info_and_in_a_run(tmp_path, capsys, case):
    make, meta = CRAFTED[case]
    index = _crafted(tmp_path / "ix.parquet", make(), meta)
    assert main(["index", "info", str(index)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(index) in err and len(err.strip().splitlines()) == 1
    data = dataset(tmp_path / "d", {"a": noise_image(1)})
    assert run(data, tmp_path / "out", f"dedup.against=[{index}]") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(index) in err


def test_an_index_whose_sources_lack_keys_reads_with_what_it_has(tmp_path, capsys):
    table = pa.table({"source": pa.array([0, 0], pa.int32()), "id": ["a", "b"], "sha": pa.array([1, 2], pa.uint64()), "phash": pa.array([1, 2], pa.uint64()),
                      "has_phash": [True, True], "mirror": pa.array([1, 2], pa.uint64()), "has_mirror": [True, True]})
    index = _crafted(tmp_path / "ix.parquet", table, {"version": 1, "sources": [{"name": "bare", "records": "many", "skipped": [1]}]})
    assert main(["index", "info", str(index)]) == 0
    assert "bare (kept): 2 images" in capsys.readouterr().out
    assert main(["index", "build", str(index), "-o", str(tmp_path / "again.parquet"), "--no-progress"]) == 0
