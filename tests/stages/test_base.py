import pytest

from recaption.record import Pair
from recaption.stages.base import Filter, Needs, Stage, StageError


def test_a_filter_only_answers_keep_or_why_not_and_the_base_counts():
    class ShortText(Filter):
        name = "short_text"

        def check(self, pair):
            return ("too_short", f"{len(pair.alt_text)} chars") if len(pair.alt_text) < 5 else None

    pairs = [Pair("a", None, texts=["a long enough text"]), Pair("b", None, texts=["ab"]), Pair("c", None, texts=["x"])]
    pairs[2].reject_with("earlier", "broken")
    stage = ShortText()
    stage(pairs)
    assert pairs[0].reject is None
    assert pairs[1].reject.key == "short_text/too_short" and pairs[1].reject.detail == "2 chars"
    assert pairs[2].reject.key == "earlier/broken"  # not seen again
    assert stage.take_seconds() >= 0 and stage.take_seconds() == 0  # the base keeps time only


def test_a_shards_counts_follow_from_where_each_record_ended():
    from recaption.runners.shards import ShardCounts

    counts = ShardCounts(["read", "a", "b"])
    for stage, reason in [(None, None), (None, None), ("read", "malformed_json"), ("a", "x"), ("b", "y"), ("b", "y"), ("write", "unwritable")]:
        pair = Pair("p", None)
        if stage:
            pair.reject_with(stage, reason)
        counts.add(pair)
    counts.seconds["a"] = 1.5
    got = counts.to_dict()
    # 7 records: a reject at stage k was seen by 0..k and kept by 0..k-1; the writer's reject passed every stage.
    assert got["read"] == {"seen": 7, "kept": 6, "rejected": {"read/malformed_json": 1}, "seconds": 0.0}
    assert got["a"] == {"seen": 6, "kept": 5, "rejected": {"a/x": 1}, "seconds": 1.5}
    assert got["b"] == {"seen": 5, "kept": 3, "rejected": {"b/y": 2}, "seconds": 0.0}


def test_declared_needs_are_checked_when_the_stage_is_built():
    class NeedsMissing(Stage):
        name = "needs_missing"
        needs = Needs(packages={"surely_not_installed_pkg": "surely-not-installed-pkg>=1"})

        def process(self, batch):
            return None

    with pytest.raises(StageError, match="needs surely-not-installed-pkg>=1: pip install"):
        NeedsMissing()


def test_declared_memory_is_checked_when_the_stage_is_built():
    class Hungry(Stage):
        name = "hungry"
        needs = Needs(memory_gb=1e6)

        def process(self, batch):
            return None

    with pytest.raises(StageError, match="needs 1000000.0 GB of memory"):
        Hungry()


def test_setup_runs_once_before_the_first_batch():
    class Counting(Stage):
        name = "counting"
        setups = 0

        def setup(self):
            type(self).setups += 1

        def process(self, batch):
            return None

    stage = Counting()
    stage([Pair("a", None)])
    stage([Pair("b", None)])
    assert Counting.setups == 1


def test_a_stage_error_rejects_only_the_record_that_caused_it():
    class Fragile(Stage):
        name = "fragile"

        def process(self, batch):
            for pair in batch:
                pair.captions.append("partial")  # state a retry must not see twice
                if pair.image_id == "bad":
                    raise ValueError("cannot handle this one")
                pair.scores["seen"] = 1

    pairs = [Pair("a", None), Pair("bad", None), Pair("c", None)]
    stage = Fragile()
    stage(pairs)
    assert [p.reject.reason if p.reject else None for p in pairs] == [None, "error", None]
    assert "ValueError: cannot handle this one" in pairs[1].reject.detail
    assert pairs[0].scores == {"seen": 1} and pairs[2].scores == {"seen": 1}
    assert pairs[0].captions == ["partial"] and pairs[2].captions == ["partial"]


def test_a_stage_counts_what_it_likes_and_the_run_adds_it_up(tmp_path):
    from recaption.cli import main
    from tests.conftest import make_pairs_dataset

    class Counting(Stage):
        name = "counting"

        def process(self, batch):
            for pair in batch:
                self.stat("looked_at")
                self.stat("text_chars", len(pair.texts[0]) if pair.texts else 0)

    stage = Counting()
    stage([Pair("a", None, texts=["abc"]), Pair("b", None, texts=["de"])])
    assert stage.take_metrics() == {"looked_at": 2, "text_chars": 5} and stage.take_metrics() == {}
    # Through a real run: sensitive_check and token_budget count their edits into stats.json.
    data = make_pairs_dataset(tmp_path / "in", 3, texts=["a smiling blonde woman " + "with a red umbrella and a very long coat. " * 15])
    assert main(["run", str(data), str(tmp_path / "out"), "--no-progress", "--recipe", "clean", "--workers", "2", "--shard-size", "1"]) == 0
    stats = __import__("json").loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["stages"]["sensitive_check"]["metrics"]["captions_edited"] == 3
    assert stats["stages"]["token_budget"]["metrics"]["captions_fitted"] == 3
    assert "captions edited 3" in (tmp_path / "out" / "report.html").read_text()
