import re

from recaption.recipe import load_recipe
from recaption.runners.shards import RunConfig
from tests.conftest import noise_image, run_locally, write_jsonl


def test_report_escapes_hostile_text_and_shows_the_run(tmp_path):
    (tmp_path / "in").mkdir()
    noise_image(1).save(tmp_path / "in" / "a.jpg")
    noise_image(2).save(tmp_path / "in" / "b.jpg")
    hostile = '<script>alert("x")</script> a red <img src=x onerror=alert(1)> bike'
    data = write_jsonl(tmp_path / "in" / "p.jsonl", [
        {"image_id": "a", "image_path": "a.jpg", "texts": [hostile]},
        {"image_id": "<b>bold-id</b>", "image_path": "missing.jpg", "texts": ["x"]},
    ])
    run_locally(RunConfig(str(data), str(tmp_path / "out"), load_recipe("clean")))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script>alert" not in html and "onerror=alert(1)>" not in html
    assert "&lt;b&gt;bold-id&lt;/b&gt;" in html  # the reject example, escaped
    assert "image_check/missing_file" in html
    assert html.count("data:image/jpeg;base64,") >= 1  # gallery thumbnail inline, no external files
    assert re.search(r"<svg [^>]*class=\"chart\"", html)
    assert "http://" not in html and "https://" not in html  # self-contained


def test_what_if_counts_every_scored_pair_kept_or_rejected():
    from recaption.record import Pair
    from recaption.report.html import what_if_rows
    from recaption.report.sample import ReportSampler, merge_samples

    sampler = ReportSampler()
    for value in (0.05, 0.35, 0.62, 0.95):
        sampler.kept(Pair(f"k{value}", None, scores={"nsfw": value}))
    flagged = Pair("r", None, scores={"nsfw": 0.81})
    flagged.reject_with("nsfw_filter", "nsfw")
    sampler.rejected(flagged)
    merged = merge_samples([sampler.to_dict(), ReportSampler().to_dict()], 48, 3)
    (row,) = what_if_rows(merged["score_bins"])
    assert row["score"] == "nsfw" and row["scored"] == 5
    counts = [n for n, _ in row["at_or_above"]]  # thresholds 0.1 ... 0.9
    assert counts == [4, 4, 4, 3, 3, 3, 2, 2, 1]


def test_merging_shard_samples_one_at_a_time_keeps_the_smallest_ranks():
    from recaption.report.sample import merge_samples

    shards = [{"gallery": [{"rank": r, "id": f"{s}:{r}"} for r in ranks], "examples": {"x/y": [s] * 5}, "widths": {"100": 1}}
              for s, ranks in enumerate([[5, 1, 9], [3, 1, 7], [2, 8]])]
    merged = merge_samples(iter(shards), 4, 3)  # an iterator: read once, one shard at a time
    assert [g["id"] for g in merged["gallery"]] == ["0:1", "1:1", "2:2", "1:3"]  # ties keep the earlier shard
    assert merged["examples"] == {"x/y": [0, 0, 0]} and merged["widths"] == {100: 3}


def test_report_cards_take_only_the_scores_a_browser_can_hold():
    from recaption.record import Pair
    from recaption.report.sample import ReportSampler

    sampler = ReportSampler()
    hostile = {"width": 10, "huge": 10**400, "nan": float("nan"), "inf": float("inf"), "flag": True, "text": "x", "p": 0.123456}
    sampler.kept(Pair("a", None, scores=hostile))
    (card,) = sampler.to_dict()["gallery"]
    assert card["scores"] == {"width": 10, "p": 0.1235}
