"""Semantic dedup (SemDeDup): planted near-identical vectors, the survivor rules, hot clusters,
and a run with a tiny random CLIP through the command line."""

import json

import numpy as np
import pytest
import yaml

from recaption.cli import main
from recaption.dedup.semantic import decode_vector, encode_vector, semantic_duplicates, spherical_kmeans
from recaption.record import Pair
from recaption.stages.base import StageError
from recaption.stages.dedup import SemanticDedup
from tests.conftest import encode, noise_image, photo, read_jsonl, write_jsonl


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted(n=3000, copies=60, d=64, seed=0, noise=0.01):
    """``n`` distinct random directions and ``copies`` near copies of the first ones (cosine ~0.997)."""
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=(n, d)))
    near = unit(base[:copies] + noise * rng.normal(size=(copies, d)))
    return np.concatenate([base, near]).astype(np.float32)


def test_planted_copies_are_found_and_nothing_else():
    x = planted()
    one = semantic_duplicates(x, k=1)  # one cluster: every pair compared
    dup = np.flatnonzero(one.best >= 0.95)
    # one of each planted pair goes (which one is the survivor rule's), naming the other
    assert sorted(min(i, int(one.of[i])) for i in dup) == list(range(60))
    assert all(abs(int(one.of[i]) - i) == 3000 for i in dup)
    # with clusters, a pair that k-means splits is missed (SemDeDup's trade), never a false one
    four = semantic_duplicates(x, k=4)
    dup = np.flatnonzero(four.best >= 0.95)
    assert len(dup) >= 57 and all(abs(int(four.of[i]) - i) == 3000 for i in dup)


def test_survivor_rules():
    rng = np.random.default_rng(1)
    centre = unit(rng.normal(size=(1, 32)))
    a = unit(centre + 0.0005 * rng.normal(size=(1, 32)))  # closest to the centroid
    b = unit(a + 0.01 * rng.normal(size=(1, 32)))  # its near copy, farther from the centroid
    others = unit(centre + 0.3 * rng.normal(size=(20, 32)))  # the rest of the cluster
    x = np.concatenate([b, a, others]).astype(np.float32)
    assert x[0] @ x[1] > 0.99 and (x[2:] @ x[2:].T - np.eye(20)).max() < 0.95
    near = semantic_duplicates(x, 1, "centroid")
    assert near.best[0] > 0.99 and near.of[0] == 1 and near.best[1] < 0.95  # b goes, a (closest) survives
    far = semantic_duplicates(x, 1, "farthest")
    assert far.best[1] > 0.99 and far.of[1] == 0 and far.best[0] < 0.95  # a goes, b survives
    best = semantic_duplicates(x, 1, np.r_[0.1, 0.9, np.zeros(20)])
    assert best.best[0] > 0.99 and best.of[0] == 1  # the higher score (a) survives


def test_a_huge_cluster_is_split_or_windowed_not_quadratic():
    rng = np.random.default_rng(2)
    same = np.repeat(unit(rng.normal(size=(1, 16))), 5000, axis=0).astype(np.float32)
    found = semantic_duplicates(same, 1, max_cluster=1000)
    assert found.windowed == 1 and (found.best >= 0.99).sum() == 5000 - 5  # one survivor per window
    mixed = np.concatenate([same[:2000], planted(3000, 0, 16, seed=3)])
    found = semantic_duplicates(mixed, 1, max_cluster=1000)
    assert found.split >= 1


def test_kmeans_labels_and_unit_centroids():
    x = planted(600, 0, 8, seed=4)
    labels, centroids = spherical_kmeans(x, 5)
    assert set(labels.tolist()) <= set(range(5)) and np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)


def test_vectors_round_trip_compactly():
    v = unit(np.random.default_rng(5).normal(size=(1, 512)))[0]
    text = encode_vector(v)
    assert len(text) < 1400 and np.allclose(decode_vector(text), v, atol=1e-3)


def sigs(x, scores=None):
    stage = SemanticDedup(keep="score:q" if scores is not None else "centroid")
    out = []
    for i, v in enumerate(x):
        pair = Pair(f"id{i}", None, texts=["t"], scores={"image_embedding": encode_vector(v), **({"q": scores[i]} if scores is not None else {})})
        out.append((f"0:{i}", stage.signature(pair)))
    return stage, out


def test_stage_decisions_what_if_and_missing_embeddings():
    x = planted(500, 20, 32, seed=6)
    stage, signatures = sigs(x, [1.0] * 500 + [0.0] * 20)  # the originals score higher: the copies go
    signatures.append(("0:999", {"id": "no-embedding", "emb": None}))
    signatures.append(("0:998", {"id": "garbage", "emb": "%%%"}))
    decisions = stage.decide(signatures)
    assert len(decisions) == 20
    d = decisions["0:500"]
    assert d.reject[0] == "semantic_duplicate" and "means the same as 'id0'" in d.reject[1]
    assert d.meta == {"semantic_dup_of": "id0"} and d.scores["semantic_dup_similarity"] > 0.95
    assert stage.metrics["no_embedding"] == 2
    rows = stage.findings["what_if"]["rows"]
    assert [r[0] for r in rows] == [0.9, 0.95, 0.98] and rows[0][1] >= rows[1][1] >= rows[2][1]
    flag = SemanticDedup(action="flag", keep="score:q")
    assert all(dec.reject is None for dec in flag.decide(signatures).values())


def test_bad_settings_are_refused():
    for bad in ({"threshold": 1.5}, {"clusters": 0}, {"keep": "best"}, {"action": "drop"}, {"max_cluster": 1}):
        with pytest.raises(StageError):
            SemanticDedup(**bad)


def test_a_run_with_a_tiny_clip_removes_semantic_copies(tmp_path, tiny_clip):
    folder = tmp_path / "data"
    (folder / "images").mkdir(parents=True)
    images = {f"n{i}": noise_image(i, (96, 80)) for i in range(6)}
    images.update({name: photo(name, (128, 96)) for name in ("astronaut", "chelsea", "coffee")})
    images["astronaut-small"] = images["astronaut"].resize((100, 75))
    records = []
    for name, img in images.items():
        (folder / "images" / f"{name}.jpg").write_bytes(encode(img, quality=90))
        records.append({"image_id": name, "image_path": f"images/{name}.jpg", "texts": [f"a picture of {name}"]})
    (folder / "images" / "coffee-again.jpg").write_bytes((folder / "images" / "coffee.jpg").read_bytes())
    records.append({"image_id": "coffee-again", "image_path": "images/coffee-again.jpg", "texts": ["more coffee"]})
    write_jsonl(folder / "pairs.jsonl", records)
    recipe = tmp_path / "semantic.yaml"
    recipe.write_text(yaml.safe_dump({"name": "semantic", "stages": [
        {"image_check": {"min_side": 32}},
        {"clean_text": {}},
        {"image_embed": {"model": str(tiny_clip), "cache": str(tmp_path / "cache")}},
        # a random CLIP puts every image within cosine 0.997 of the others; copies sit at 0.9999+
        {"semantic_dedup": {"threshold": 0.999}},
    ]}))
    out = tmp_path / "out"
    assert main(["run", str(folder / "pairs.jsonl"), str(out), "--recipe", str(recipe), "--no-progress", "--workers", "1"]) == 0
    rejected = {r["image_id"]: r["reject"] for f in (out / "rejects").glob("*.jsonl") for r in read_jsonl(f)}
    # one of each copy goes (the one farther from its cluster's centroid), naming the other
    assert len(rejected) == 2 and all(r["reason"] == "semantic_duplicate" for r in rejected.values())
    twins = {"astronaut": "astronaut-small", "astronaut-small": "astronaut", "coffee": "coffee-again", "coffee-again": "coffee"}
    assert all(f"'{twins[name]}'" in r["detail"] for name, r in rejected.items())
    assert {twins[n] for n in rejected}.isdisjoint(rejected)
    kept = [r for f in (out / "data").glob("*.jsonl") for r in read_jsonl(f)]
    assert len(kept) == 9 and all("image_embedding" not in r["scores"] for r in kept)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["findings"]["semantic_dedup"]["what_if"]["rows"][-1][1] == 2  # at 0.999
    assert "Semantic duplicates: what-if" in (out / "report.html").read_text()


def test_clusters_compared_in_tasks_decide_as_one_process_does(tmp_path):
    """Sharded (centroids from a sample, each cluster in a task): with one cluster and the survivor
    chosen by score, exactly the in-process decision; with several, the planted copies still go."""
    from recaption.runners.task_pools import InProcessTasks

    x = planted(900, 40, 32, seed=7)
    scores = list(np.random.default_rng(7).random(len(x)))
    stage, signatures = sigs(x, scores)
    shards = []
    for s in range(0, len(signatures), 200):
        path = tmp_path / f"s{s}.jsonl"
        path.write_text("".join(json.dumps([f"{s // 200}:{i}", sig]) + "\n" for i, (_, sig) in enumerate(signatures[s : s + 200])))
        shards.append((s // 200, str(path)))
    keyed = [(f"{s // 200}:{i}", sig) for s in range(0, len(signatures), 200) for i, (_, sig) in enumerate(signatures[s : s + 200])]
    one = SemanticDedup(keep="score:q", clusters=1)
    expected = {k: (d.reject, d.scores, d.meta) for k, d in one.decide(keyed).items()}
    got = {k: (d.reject, d.scores, d.meta) for k, d in one.decide_in_tasks(InProcessTasks(), shards, str(tmp_path / "w"), len(keyed)).items()}
    assert got == expected and len(got) >= 40
    assert one.findings["what_if"]["rows"][1][1] == len(got)
    several = SemanticDedup(keep="score:q", clusters=4)
    found = several.decide_in_tasks(InProcessTasks(), shards, str(tmp_path / "w"), len(keyed))
    assert 36 <= len(found) <= 40 and not (tmp_path / "w").exists()
