"""The Ray Data runner: the same records as the local runner, actor pools, resume by shard.

One local Ray per module, started here with 2 CPUs and a small object store, as the
issue asks; the runner finds it running and leaves it running.
"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from recaption.cli import main
from recaption.io import open_reader, open_writer
from recaption.io.base import ReaderOptions
from recaption.recipe import RecipeError, load_recipe
from recaption.runners.ray_data import plan_steps
from recaption.runners.shards import RunConfig, RunError, cut_segments
from tests.conftest import make_pairs_dataset, noise_image, read_jsonl, run_locally, run_on_ray, write_jsonl

SMALL_OBJECT_STORE = 80 * 2**20  # Ray's floor is 75 MiB


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, object_store_memory=SMALL_OBJECT_STORE, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def config(input_path, out, recipe="clean", overrides=(), shard_size=7, **kwargs):
    return RunConfig(str(input_path), str(out), load_recipe(recipe, list(overrides)), reader=ReaderOptions(shard_size=shard_size), **kwargs)


def run_both(input_path, tmp_path, **kwargs):
    local = run_locally(config(input_path, tmp_path / "local", **kwargs))
    on_ray = run_on_ray(config(input_path, tmp_path / "ray", **kwargs))
    return local, on_ray


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_seconds(stats: dict) -> dict:
    stages = {name: {k: v for k, v in counts.items() if k != "seconds"} for name, counts in stats["stages"].items()}
    return {**{k: v for k, v in stats.items() if k != "seconds"}, "stages": stages}


def test_same_records_rejects_and_counts_as_the_local_runner(demo_dataset, tmp_path):
    context = ray.data.DataContext.get_current()
    callers = (context.enable_progress_bars, context.op_resource_reservation_enabled)
    local, on_ray = run_both(demo_dataset, tmp_path)
    assert (context.enable_progress_bars, context.op_resource_reservation_enabled) == callers  # left as they were
    assert local["shards"] > 1 and local["rejected"] > 5  # the demo's broken records, over several shards
    assert files(tmp_path / "ray" / "data") == files(tmp_path / "local" / "data")
    assert files(tmp_path / "ray" / "rejects") == files(tmp_path / "local" / "rejects")
    assert without_seconds(on_ray) == without_seconds(local)
    assert on_ray["stages"]["image_check"]["seconds"] > 0
    assert (tmp_path / "ray" / "report.html").stat().st_size > 10_000
    assert not (tmp_path / "ray" / "_work" / "ray").exists()  # the parts are gone once committed


def test_dedup_decides_in_tasks_on_ray_as_the_local_runner_does(tmp_path):
    """On Ray, dedup's map and reduce run as tasks (the driver holds only the duplicates): the
    same decisions as the local runner's in-process decision, with a reference to check against."""
    first = make_pairs_dataset(tmp_path / "a", 15)
    assert run_locally(config(first, tmp_path / "first"))["output"] == 15
    index = tmp_path / "kept.parquet"
    assert main(["index", "build", str(tmp_path / "first"), "-o", str(index), "--no-progress"]) == 0
    records = read_jsonl(first)[:8]  # what the first run kept, again (the same images, copied in)
    (tmp_path / "b" / "images").mkdir(parents=True)
    for r in records:
        copy = Path("images") / f"again-{Path(r['image_path']).name}"
        shutil.copyfile(tmp_path / "a" / r["image_path"], tmp_path / "b" / copy)
        r["image_path"] = str(copy)
    for i in range(20):  # new images, some sharing captions, one id repeated
        noise_image(100 + i, (96, 80)).save(tmp_path / "b" / "images" / f"n{i}.jpg")
        records.append({"image_id": f"new{i % 19}", "image_path": f"images/n{i}.jpg", "texts": [f"a shared caption, number {i % 4}"]})
    second = write_jsonl(tmp_path / "b" / "pairs.jsonl", records)
    local, on_ray = run_both(second, tmp_path, overrides=[f"dedup.against=[{index}]"], shard_size=5)
    assert local["rejects_by_reason"]["dedup/seen_before"] == 8 and local["rejects_by_reason"]["dedup/duplicate_id"] == 1
    assert files(tmp_path / "ray" / "rejects") == files(tmp_path / "local" / "rejects")
    assert files(tmp_path / "ray" / "data") == files(tmp_path / "local" / "data")
    assert without_seconds(on_ray) == without_seconds(local)


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_parquet_and_webdataset_inputs(tmp_path, fmt):
    source = make_pairs_dataset(tmp_path / "src", 30, texts=["a colourful pattern", "IMG_0001.JPG", "another pattern"])
    reader = open_reader(source, None, ReaderOptions())
    with open_writer(fmt, tmp_path / "in").open_shard("part-00000") as add:  # images travel inside the files
        for shard in reader.plan():
            for pair in reader.read(shard):
                pair.image, pair.image_ext = Path(pair.image).read_bytes(), "jpg"
                add(pair)
    local, on_ray = run_both(tmp_path / "in", tmp_path, output_format="jsonl")
    assert local["input_format"] == on_ray["input_format"] == fmt and local["input"] == 30
    assert files(tmp_path / "ray" / "data") == files(tmp_path / "local" / "data")
    assert without_seconds(on_ray) == without_seconds(local)


def test_a_model_stage_runs_in_an_actor_pool_with_the_recipes_placement(tmp_path, tiny_clip):
    data = make_pairs_dataset(tmp_path / "in", 20)
    overrides = [f"clip_score.model={tiny_clip}", "clip_score.cache=none", "ray.clip_score.concurrency=1", "ray.clip_score.batch_size=4"]
    recipe = tmp_path / "scored.yaml"
    recipe.write_text("stages:\n  - image_check:\n  - clean_text:\n  - clip_score:\n  - token_budget:\n")
    steps = plan_steps(cut_segments(load_recipe(str(recipe), overrides).build())[0], load_recipe(str(recipe), overrides).ray)
    assert [(s.indices, s.actors) for s in steps] == [([0, 1], False), ([2], True), ([3], False)]
    local, on_ray = run_both(data, tmp_path, recipe=str(recipe), overrides=overrides)
    assert without_seconds(on_ray) == without_seconds(local) and local["output"] == 20

    def scores(folder):
        rows = [r for f in sorted((folder / "data").glob("*.jsonl")) for r in read_jsonl(f)]
        return [(r["image_id"], [c["scores"]["clip_score"] for c in r["captions"]]) for r in rows]

    # Batches of 4 on Ray, of 32 locally: the same scores up to float rounding in the matmuls.
    for (id_local, s_local), (id_ray, s_ray) in zip(scores(tmp_path / "local"), scores(tmp_path / "ray"), strict=True):
        assert id_local == id_ray and s_local == pytest.approx(s_ray, abs=2e-3)


def test_semantic_dedup_compares_clusters_in_ray_tasks(tmp_path, tiny_clip):
    """image_embed in an actor pool, semantic_dedup's clusters compared in tasks: the copies go,
    naming the image they mean the same as, and the embedding is not in the output."""
    data = make_pairs_dataset(tmp_path / "in", 12)
    records = read_jsonl(data)
    for i in range(3):  # three copies under new ids
        records.append({**records[i], "image_id": f"copy{i}"})
    write_jsonl(data, records)
    recipe = tmp_path / "semantic.yaml"
    recipe.write_text("stages:\n  - image_check:\n  - clean_text:\n  - image_embed:\n  - semantic_dedup: {threshold: 0.9999, keep: farthest}\n")
    overrides = [f"image_embed.model={tiny_clip}", "image_embed.cache=none"]
    stats = run_on_ray(config(data, tmp_path / "ray", recipe=str(recipe), overrides=overrides))
    assert stats["rejects_by_reason"] == {"semantic_dedup/semantic_duplicate": 3}
    rejected = {r["image_id"]: r["reject"]["detail"] for f in (tmp_path / "ray" / "rejects").glob("*.jsonl") for r in read_jsonl(f)}
    twins = {f"copy{i}": f"img-{i:05d}" for i in range(3)}
    assert all(f"'{twins.get(k, k)}'" in d or f"'copy{k[-1]}'" in d for k, d in rejected.items())
    kept = [r for f in (tmp_path / "ray" / "data").glob("*.jsonl") for r in read_jsonl(f)]
    assert len(kept) == 12 and all("image_embedding" not in r["scores"] for r in kept)
    assert stats["findings"]["semantic_dedup"]["what_if"]["rows"][-1][1] == 3


def test_default_recipe_groups_model_stages_into_one_actor_step():
    seg = cut_segments(load_recipe("default").build())[0]
    steps = [([seg.stages[i].name for i in s.indices], s.actors) for s in plan_steps(seg, {})]
    assert steps == [
        (["image_check", "clean_text"], False),
        (["ocr", "classify", "nsfw"], True),
        (["nsfw_filter", "compose_caption", "sensitive_check", "token_budget"], False),
    ]
    for placement in ({"num_cpus": 2}, {}):  # `classify:` with no keys is placed too
        placed = plan_steps(seg, {"classify": placement})
        assert [([seg.stages[i].name for i in s.indices], s.actors) for s in placed][1:4] == [(["ocr"], True), (["classify"], True), (["nsfw"], True)]


def test_resume_by_shard_finishes_a_run_another_runner_started(demo_dataset, tmp_path):
    run_locally(config(demo_dataset, tmp_path / "local", keep_work=True))
    out = tmp_path / "out"
    run_locally(config(demo_dataset, out, keep_work=True))
    # Two shards of the last pass did not finish, and an interrupted Ray run left rows behind.
    for shard in ("part-00001", "part-00003"):
        (out / "_work" / "done" / f"seg1-{shard}.json").unlink()
        (out / "data" / f"{shard}.jsonl").unlink()
    leftover = out / "_work" / "ray" / "seg1" / "part-00001"
    leftover.mkdir(parents=True)
    (leftover / "stale.parquet").write_bytes(b"rows of a run that died")
    untouched = (out / "data" / "part-00000.jsonl").stat().st_mtime_ns
    (out / "stats.json").unlink()
    stats = run_on_ray(config(demo_dataset, out, keep_work=True))
    assert (out / "data" / "part-00000.jsonl").stat().st_mtime_ns == untouched  # finished shards are not redone
    assert files(out / "data") == files(tmp_path / "local" / "data")
    assert files(out / "rejects") == files(tmp_path / "local" / "rejects")
    assert stats["input"] == stats["output"] + stats["rejected"]


def test_ctrl_c_keeps_finished_shards_and_the_rerun_completes(tmp_path):
    data = make_pairs_dataset(tmp_path / "in", 200, texts=["a colourful pattern", "a colourful pattern", "#tag only"])
    for i in range(200):  # larger images make each shard take a moment, so that the stop lands part way
        noise_image(i, (900, 700)).save(tmp_path / "in" / "images" / f"{i:05d}.jpg", quality=95)
    write_jsonl(data, open(data).read().splitlines() + ["{broken"])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "recaption.cli", "run", str(data), str(out), "--recipe", "clean", "--shard-size", "5",
           "--runner", "ray", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    done = out / "_work" / "done"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and len(list(done.glob("seg0-*.json")) if done.exists() else []) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be stopped"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again to resume" in stderr
    assert not (out / "stats.json").exists()
    kept_markers = {p.name: p.stat().st_mtime_ns for p in done.glob("*.json")}
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert all(done.joinpath(name).stat().st_mtime_ns == t for name, t in kept_markers.items())  # not redone
    run_locally(config(data, tmp_path / "local", shard_size=5))
    assert files(out / "data") == files(tmp_path / "local" / "data")
    assert files(out / "rejects") == files(tmp_path / "local" / "rejects")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input"] == 201 == stats["output"] + stats["rejected"]


def test_a_failed_ray_task_stops_the_run_with_one_line_and_keeps_finished_shards(tmp_path):
    data = make_pairs_dataset(tmp_path / "in", 21)
    out = tmp_path / "out"
    run_locally(config(data, out))
    (out / "_work" / "done" / "seg0-part-00002.json").unlink()  # one shard left to do ...
    (out / "stats.json").unlink()
    data.unlink()  # ... and its input gone
    with pytest.raises(RunError, match=r"^the Ray job failed \(InputError: .*pairs.jsonl.*\)\. Finished shards are kept") as caught:
        run_on_ray(config(data, out))
    assert "\n" not in str(caught.value)
    assert (out / "_work" / "done" / "seg0-part-00000.json").exists()


def test_a_stage_that_asks_for_more_gpus_than_the_cluster_has_is_refused_before_work(tmp_path):
    data = make_pairs_dataset(tmp_path / "in", 3)
    with pytest.raises(RunError, match="num_gpus is 1 but the Ray cluster has 0 GPUs"):
        run_on_ray(config(data, tmp_path / "out", overrides=["ray.image_check.num_gpus=1"]))


def test_ray_placements_are_checked_like_stage_arguments(tmp_path):
    with pytest.raises(RecipeError, match="ray.clip_score: the recipe has no stage"):
        load_recipe("clean", ["ray.clip_score.num_gpus=1"])
    with pytest.raises(RecipeError, match=r"ray.image_check.concurency is unknown \(did you mean 'concurrency'"):
        load_recipe("clean", ["ray.image_check.concurency=2"])
    with pytest.raises(RecipeError, match="concurrency must be N or"):
        load_recipe("clean", ["ray.image_check.concurrency=[4, 2]"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - image_check:\nray:\n  image_check: {num_cpus: -1}\n")
    with pytest.raises(RecipeError, match=r"r.yaml line 4: ray.image_check.num_cpus must be a number >= 0"):
        load_recipe(str(recipe))
    # Where stages run is not part of what a resumed run must match.
    data = make_pairs_dataset(tmp_path / "in", 3)
    run_locally(config(data, tmp_path / "out"))
    run_locally(config(data, tmp_path / "out", overrides=["ray.image_check.concurrency=2"]))


def test_without_ray_the_flag_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    data = make_pairs_dataset(tmp_path / "in", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    assert main(["run", str(data), str(tmp_path / "out"), "--runner", "ray", "--no-progress"]) == 1
    assert "pip install 'recaption[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work
    assert main(["run", str(data), str(tmp_path / "out"), "--address", "auto"]) == 2

