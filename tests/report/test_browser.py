"""The run report in a real browser (headless Chromium, Playwright), opened from disk as a user
opens it: every chart has its axes and percentiles, the gallery filters, sorts and searches,
the recipe reads as YAML with the --set line marked. A screenshot is kept in
build/test-artifacts/. Skips where Chromium or Playwright is absent."""

import json
import shutil
from pathlib import Path

import pytest

from recaption.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium); the browser test needs it")


def test_report_charts_gallery_and_settings_in_headless_chromium(tmp_path, demo_dataset):
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    out = tmp_path / "out"
    assert main(["run", str(demo_dataset), str(out), "--recipe", "clean", "--workers", "1", "--no-progress",
                 "--set", "token_budget.max_tokens=60"]) == 0
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((out / "report.html").as_uri())
        expect = playwright.expect

        charts = page.locator("svg.chart")
        assert charts.count() == 3  # tokens (alt-text and caption together), widths, heights
        for i in range(3):
            chart = charts.nth(i)
            assert chart.locator("g.y-axis text.tick").count() >= 2  # counts on the y axis
            assert chart.locator("g.x-axis text.tick").count() >= 2
            assert "p50" in chart.locator("g.legend").first.text_content()
            assert chart.locator("rect title").count() >= 1  # a count on hover
        tokens = charts.nth(0)
        assert tokens.locator("g.legend").count() == 2 and tokens.locator("line.marker").count() == 1
        assert "60" in tokens.locator("text.marker-label").text_content()  # the budget, as --set made it

        clusters = page.locator(".cluster")  # each duplicate cluster: the kept pair beside what went for it
        assert clusters.count() >= 2
        for i in range(clusters.count()):
            cluster = clusters.nth(i)
            assert cluster.locator(".pair.kept").count() == 1 and cluster.locator(".pair.dropped").count() >= 1
            assert cluster.locator(".pair").first.get_attribute("class") == "pair kept"
            assert "bits" in cluster.locator(".pair.dropped .role").first.text_content()
            assert cluster.locator(".pair.dropped").first.text_content().count("copy") >= 1  # the rule

        kept = int(json.loads((out / "stats.json").read_text())["output"])
        cards = page.locator("#gallery > .pair")
        total = cards.count()
        count = expect(page.locator("#f-count"))
        count.to_have_text(f"{min(kept, 48)} of {total} shown")
        page.select_option("#f-status", "rejected")
        rejected_shown = page.locator("#gallery > .pair:visible")
        assert rejected_shown.count() == total - min(kept, 48)
        assert all(s != "kept" for s in rejected_shown.evaluate_all("cs => cs.map(c => c.dataset.status)"))
        page.select_option("#f-status", "dedup/exact_image")
        count.to_have_text(f"1 of {total} shown")
        page.select_option("#f-status", "kept")

        page.select_option("#f-sort", "width:desc")
        widths = page.locator("#gallery > .pair:visible").evaluate_all("cs => cs.map(c => JSON.parse(c.dataset.scores).width)")
        assert widths == sorted(widths, reverse=True) and len(set(widths)) > 1
        page.select_option("#f-score", "width")
        page.fill("#f-min", "500")
        narrowed = page.locator("#gallery > .pair:visible").evaluate_all("cs => cs.map(c => JSON.parse(c.dataset.scores).width)")
        assert narrowed and all(w >= 500 for w in narrowed) and len(narrowed) < len(widths)
        page.fill("#f-min", "")
        page.select_option("#f-score", "")
        page.fill("#f-text", "espresso")
        assert 1 <= page.locator("#gallery > .pair:visible").count() < kept
        page.fill("#f-text", "")

        recipe = page.locator("pre.recipe")
        assert "  - token_budget:" in recipe.text_content() and "\\u0027" not in recipe.text_content()
        assert recipe.locator(".override").text_content().strip() == "max_tokens: 60   # --set"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000
