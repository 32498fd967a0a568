"""The dedup decision made by map and reduce tasks equals the one made in one process: on planted
copies of photo tiles, repeated ids, shared and near captions, ties and chains, in any number of
partitions."""

import json

import numpy as np
import pytest

from recaption.dedup.decision import Resolver
from recaption.dedup.sharded import decide_sharded
from recaption.record import Pair
from recaption.runners.task_pools import InProcessTasks
from recaption.stages.dedup import Dedup, DedupDecisions
from tests.stages.test_dedup import planted_copies


def signature_files(tmp_path, stage, pairs, shard_size):
    """The pairs cut into shards, each shard's signatures in a file keyed as the runner keys them."""
    shards, sigs = [], []
    for start in range(0, len(pairs), shard_size):
        index = start // shard_size
        path = tmp_path / f"shard{index}.jsonl"
        with open(path, "w") as fh:
            for pos, pair in enumerate(pairs[start : start + shard_size]):
                row = [f"{index}:{pos}", stage.signature(pair)]
                sigs.append(tuple(row))
                fh.write(json.dumps(row) + "\n")
        shards.append((index, str(path)))
    return shards, sigs


def in_tasks(stage, shards, work, records, partitions=None):
    """The stage's decision with the map and reduce as tasks in this process, in ``partitions``."""
    found = decide_sharded(stage.rules(), stage.references(), InProcessTasks(), shards, str(work), records, partitions)
    return DedupDecisions(found.columns, stage.phash_radius)


def as_plain(decisions):
    return {k: (d.reject, d.scores, d.meta) for k, d in decisions.items()}


@pytest.fixture(scope="module")
def mixed_pairs():
    from recaption.stages.image import ImageCheck

    pairs, _ = planted_copies(copies=60)
    ImageCheck(min_side=32)(pairs)
    rng = np.random.default_rng(0)
    extra = []
    for i, p in enumerate(list(pairs[:30])):
        # a repeated id, a shared caption and a near caption, a tie (the same pixels, the same hash)
        extra.append(Pair(p.image_id if i % 3 == 0 else f"again{i}", p.image, texts=[p.texts[0]], scores=dict(p.scores)))
    texts = ["a red bicycle leaning on a blue wall in the old town", "a red bicycle leaning on a blue wall in the old town!",
             "two dogs running on a wet beach at sunset", "two dogs running on the wet beach at sunset", "a bowl of soup"]
    for i, t in enumerate(texts * 4):
        scores = {"sha256": f"{rng.integers(1, 2**62):016x}".ljust(64, "0"), "phash": f"{rng.integers(0, 2**62):016x}", "width": 10, "height": 10}
        extra.append(Pair(f"text{i}", None, texts=[t], scores=scores))
    out = pairs + extra
    order = rng.permutation(len(out))
    return [out[i] for i in order]


@pytest.mark.parametrize("options", [{}, {"near_crops": True, "text_action": "reject"}, {"phash_radius": 0, "near_text": False}])
@pytest.mark.parametrize("partitions,shard_size,compact_at", [(1, 1000, None), (3, 97, None), (7, 40, None), (7, 40, 1)])
def test_tasks_decide_as_one_process_does(tmp_path, monkeypatch, mixed_pairs, options, partitions, shard_size, compact_at):
    if compact_at:  # the resolver compacts its tables after every task result, not only at the end
        monkeypatch.setattr(Resolver, "COMPACT_AT", compact_at)
    stage = Dedup(**options)
    shards, sigs = signature_files(tmp_path, stage, mixed_pairs, shard_size)
    expected = as_plain(Dedup(**options).decide(sigs))
    assert sum(1 for d in expected.values() if d[0]) > 50  # there is something to decide
    got = as_plain(in_tasks(stage, shards, tmp_path / "work", len(sigs), partitions))
    assert got == expected
    assert not (tmp_path / "work").exists()  # the task files are gone


def test_chains_and_ties_resolve_alike(tmp_path):
    """a ~ b ~ c in a chain (a and c farther apart than the radius), equal pixels: one group,
    the earliest kept; a repeated id that is also a copy goes as the repeated id."""
    def pair(i, phash, image_id=None):
        return Pair(image_id or f"p{i}", None, texts=[f"unique caption {i} " + "x" * i],
                    scores={"sha256": f"{i + 1:064x}", "phash": phash, "width": 8, "height": 8})
    pairs = [pair(0, "0000000000000000"), pair(1, "000000000000000f"), pair(2, "00000000000000ff"),
             pair(3, "ffffffffffffffff"), pair(4, "fffffffffffffff0", "p3")]
    stage = Dedup()
    shards, sigs = signature_files(tmp_path, stage, pairs, 2)
    expected = Dedup().decide(sigs)
    assert expected["0:1"].reject == ("near_image", "duplicate of 'p0'") and expected["1:0"].reject == ("near_image", "duplicate of 'p0'")
    assert expected["2:0"].reject[0] == "duplicate_id"
    assert as_plain(in_tasks(stage, shards, tmp_path / "w", 5, 2)) == as_plain(expected)


def test_the_mixed_set_has_every_kind_of_decision(tmp_path, mixed_pairs):
    stage = Dedup(text_action="reject")
    shards, sigs = signature_files(tmp_path, stage, mixed_pairs, 40)
    got = in_tasks(stage, shards, tmp_path / "w", len(sigs), 7)
    reasons = {d.reject[0] for d in got.values() if d.reject}
    assert reasons == {"duplicate_id", "exact_image", "near_image", "duplicate_text"}


def test_shards_with_no_signature_decide_nothing(tmp_path):
    stage = Dedup()
    shards, sigs = signature_files(tmp_path, stage, [], 10)
    (tmp_path / "empty.jsonl").write_text("")
    assert stage.decide_in_tasks(InProcessTasks(), [(0, str(tmp_path / "empty.jsonl"))], str(tmp_path / "w"), 0) == {}
