"""The review page in a real browser: headless Chromium (Debian's package) driven by Playwright.

Opens the page, edits a caption (with markup in it), accepts another, reloads, and finds the
decisions stored and the edit shown as text, not HTML; a hostile alt-text must not run. A
screenshot is kept in build/test-artifacts/. Skips where Chromium or Playwright is absent.
"""

import shutil
from pathlib import Path

import pytest

from recaption.review.server import ReviewServer
from recaption.review.session import ReviewSession
from tests.review.test_server import HOSTILE, dataset  # noqa: F401 - the fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium); the browser test needs it")


def test_edit_accept_reload_in_headless_chromium(dataset):  # noqa: F811 - the fixture
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    session = ReviewSession.open(dataset)
    server = ReviewServer(session, "ann").start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dialogs: list[str] = []
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server.url)
            progress = playwright.expect(page.locator("#progress"))  # polls without eval, which the page's CSP forbids
            progress.to_have_text("0 / 4 decided")  # the dataset's fifth record leads outside its folder: read/outside_input
            assert page.inner_text("#alt").startswith(HOSTILE)  # shown as text ...
            assert page.locator("#alt img, #alt script").count() == 0  # ... never as markup
            page.keyboard.press("e")
            page.fill("#edit-text", "a photo of a <b>red</b> car")
            page.keyboard.press("Control+Enter")
            progress.to_have_text("1 / 4 decided")
            # the second pair: the taggers' evidence and both of its original texts are shown
            evidence = page.inner_text("#evidence")
            assert "96 × 80 px" in evidence and "sports car 0.71" in evidence and '"SALE 50%"' in evidence and "nsfw" in evidence
            assert page.inner_text("#more-alts") == "second alt-text: my red car at the beach"
            assert page.locator("#candidates li").first.inner_text().startswith("[1] alt-text")  # numbered once
            page.keyboard.press("9")  # there is no ninth candidate: said where the eye is, nothing saved
            playwright.expect(page.locator("#status")).to_have_text("no candidate 9: this pair has 2 (press 1–2, e to edit, r to reject)")
            assert "warn" in page.get_attribute("#status", "class")
            progress.to_have_text("1 / 4 decided")
            page.keyboard.press("z")  # zoom, and any key closes it
            playwright.expect(page.locator("#zoom")).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "review-zoom.png"))
            page.keyboard.press("Escape")
            playwright.expect(page.locator("#zoom")).to_be_hidden()
            page.keyboard.press("1")  # accept the second pair's first candidate
            progress.to_have_text("2 / 4 decided")
            page.reload()
            progress.to_have_text("2 / 4 decided")
            assert page.inner_text("#position") == "3 of 4"  # resumed at the first undecided pair
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            assert page.inner_text("#decision") == "edited: a photo of a <b>red</b> car"
            assert page.locator("#decision b").count() == 0
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "review-page.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    assert dialogs == []  # nothing from the data ran as script
    stored = ReviewSession.open(dataset).store.current(1, "ann")
    assert {k[0]: d.action for k, d in stored.items()} == {"img-0": "edit", "img-1": "accept"}
    assert stored[("img-0", "ann")].text == "a photo of a <b>red</b> car"
    assert (ARTIFACTS / "review-page.png").stat().st_size > 10_000
