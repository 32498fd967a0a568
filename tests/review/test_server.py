"""The review server and the export of a round: durable decisions, hostile data, rounds."""

import json
import math
import threading
import time
import urllib.error
import urllib.request

import pytest

from recaption.cli import main
from recaption.io import read_kept_pairs
from recaption.io.base import ReaderOptions
from recaption.review.server import ReviewServer
from recaption.review.session import ReviewSession
from tests.conftest import noise_image, write_jsonl

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    secret = tmp_path / "secret.jpg"  # an image outside the dataset's folder
    noise_image(99).save(secret)
    records = []
    for i in range(4):
        noise_image(i).save(root / "images" / f"{i}.jpg")
        records.append({
            "image_id": f"img-{i}", "image_path": f"images/{i}.jpg", "texts": [f"{HOSTILE} photo {i}" if i == 0 else f"IMG_{i}.jpg a red car"],
            "captions": [{"text": f"a red car {i}", "source": "alt-text", "selected": True}, {"text": f"a photo of a red car {i}", "source": "rules", "round": 1, "parent": 0, "scores": {"clip_score": 30.5}}],
        })
        if i == 1:  # what the taggers stored, and a second alt-text: the page shows both
            records[-1]["texts"].append("second alt-text: my red car at the beach")
            records[-1]["scores"] = {"width": 96, "height": 80, "nsfw": 0.03, "faces": 0}
            records[-1]["meta"] = {"tags": {"classify": {"model": "m", "value": [{"label": "sports car", "p": 0.71}, {"label": "convertible", "p": 0.12}]},
                                            "ocr": {"model": "o", "value": [{"text": "SALE 50%"}]}}}
    records.append({"image_id": "escape", "image_path": str(secret), "texts": ["a photo"]})
    return write_jsonl(root / "pairs.jsonl", records)


def call(url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})} if data else headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as res:
            return res.status, dict(res.headers), res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def burst(urls: list[str]) -> list[float]:
    """Every URL requested at once, a thread each: each answer's seconds (inf where the answer
    was not a 200, or never came)."""
    times = [math.inf] * len(urls)

    def one(k: int) -> None:
        start = time.perf_counter()
        try:
            status = call(urls[k])[0]
        except OSError:
            return
        if status == 200:
            times[k] = time.perf_counter() - start

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return times


def serve(dataset, reviewer="ann", **kwargs):
    return ReviewServer(ReviewSession.open(dataset, **kwargs), reviewer).start()


def test_the_page_is_static_and_locked_down(dataset):
    server = serve(dataset)
    try:
        status, headers, body = call(server.url)
        assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
        assert b"<script src=\"/app.js\"" in body and b"alert" not in body  # no data in the page itself
        _, _, script = call(server.url + "app.js")
        assert b"innerHTML" not in script and b"textContent" in script
        status, _, body = call(server.url + "api/state")
        state = json.loads(body)
        assert status == 200 and state["total"] == 4 and state["round"] == 1  # "escape" leads outside: refused by the reader
        assert state["items"][0]["alt_text"].startswith(HOSTILE)  # data travels as JSON, as it is
    finally:
        server.stop()


def test_images_are_served_from_inside_the_root_only(dataset):
    server = serve(dataset)
    try:
        status, headers, body = call(server.url + "image/1")
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
        assert call(server.url + "image/4")[0] == 404  # the record points outside the dataset's folder
        assert call(server.url + "image/..%2F..%2Fsecret.jpg")[0] == 404
        assert call(server.url + "image/99")[0] == 404
    finally:
        server.stop()


def test_decisions_are_durable_per_reviewer_and_checked(dataset):
    server = serve(dataset)
    url = server.url
    try:
        status, _, body = call(url + "api/decision", {"image_id": "img-1", "action": "edit", "caption_index": 1, "text": "a photo of a <b>red</b> car"})
        assert status == 200 and json.loads(body)["decided"] == 1
        assert call(url + "api/decision?reviewer=bob", {"image_id": "img-1", "action": "accept", "caption_index": 1, "text": "a photo of a red car 1"})[0] == 200
        assert call(url + "api/decision", {"image_id": "img-2", "action": "reject"})[0] == 400  # a reject needs a reason
        assert call(url + "api/decision", {"image_id": "nope", "action": "accept", "text": "x"})[0] == 400
        assert call(url + "api/decision", {"image_id": "img-2", "action": "reject", "reason": "x"}, {"Origin": "http://evil.example"})[0] == 403
        form = urllib.request.Request(url + "api/decision", data=b"image_id=img-2", headers={"Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(form, timeout=10)
    finally:
        server.stop()
    again = serve(dataset)  # a restarted server finds every decision, and each reviewer's own
    try:
        ann = json.loads(call(again.url + "api/state")[2])
        bob = json.loads(call(again.url + "api/state?reviewer=bob")[2])
        assert ann["decisions"]["img-1"]["text"] == "a photo of a <b>red</b> car" and ann["decided"] == 1
        assert bob["decisions"]["img-1"]["action"] == "accept"
    finally:
        again.stop()


def test_export_writes_human_captions_and_the_next_round_builds_on_them(dataset, tmp_path):
    session = ReviewSession.open(dataset)
    session.decide("ann", {"image_id": "img-1", "action": "edit", "caption_index": 1, "text": "a photo of a big red car 1"})
    session.decide("ann", {"image_id": "img-2", "action": "accept", "caption_index": 1, "text": "a photo of a red car 2"})
    session.decide("ann", {"image_id": "img-3", "action": "reject", "reason": "image unreadable"})
    session.store.close()
    out = tmp_path / "round1"
    assert main(["review", "export", str(dataset), str(out), "--finetune", str(tmp_path / "ft.jsonl")]) == 0
    pairs, _ = read_kept_pairs(out, None, ReaderOptions())
    by_id = {p.image_id: p for p in pairs}
    assert "img-3" not in by_id and (out / "rejects" / "part-00000.jsonl").exists()
    rejected = json.loads((out / "rejects" / "part-00000.jsonl").read_text().splitlines()[0])
    assert rejected["reject"]["stage"] == "review" and "image unreadable" in rejected["reject"]["detail"]
    human = [c for c in by_id["img-1"].captions if c.source == "human"][0]
    assert (human.round, human.parent, human.params["action"], human.params["edit_distance"], human.selected) == (1, 1, "edit", 1, True)
    summary = json.loads((out / "review.json").read_text())
    # rules was offered in three decisions and accepted as it was in one
    assert summary["acceptance_rate_by_source"]["rules"] == pytest.approx(100 / 3, abs=0.01) and summary["reject_reasons"] == {"image unreadable": 1}
    assert "image unreadable" in (out / "review.html").read_text()
    finetune = [json.loads(line) for line in open(tmp_path / "ft.jsonl")]
    assert sorted(r["caption"] for r in finetune) == ["a photo of a big red car 1", "a photo of a red car 2"]
    nxt = ReviewSession.open(out)
    assert nxt.round == 2 and nxt.image_bytes(0) is not None  # the images are still found from the next round
    item = next(nxt.item(k) for k in range(len(nxt.pairs)) if nxt.pairs[k].image_id == "img-1")
    assert item["previous"]["text"] == "a photo of a big red car 1"  # round 1's decision is round 2's input
    assert [nxt.pairs[k].image_id for k in ReviewSession.open(out, cross_check=True).assigned("bob")] == ["img-1", "img-2"]
    assert ReviewSession.open(out, cross_check=True).assigned("ann") == []  # ann does not check herself


def test_the_review_command_says_what_is_wrong_with_its_dataset(tmp_path, capsys):
    assert main(["review", str(tmp_path / "missing"), "--no-browser"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_export_resolves_reviewers_who_disagree_by_the_stated_rule_and_lists_them(dataset, tmp_path, capsys):
    import time

    session = ReviewSession.open(dataset)
    # img-1: ann edits, then bob accepts another caption: kept, bob's (the latest) is the training caption
    session.decide("ann", {"image_id": "img-1", "action": "edit", "caption_index": 1, "text": "ann's caption of img-1"})
    time.sleep(0.01)
    session.decide("bob", {"image_id": "img-1", "action": "accept", "caption_index": 1, "text": "a photo of a red car 1"})
    # img-2: ann accepts, bob rejects later: a tie, the latest (a reject) wins
    session.decide("ann", {"image_id": "img-2", "action": "accept", "caption_index": 1, "text": "a photo of a red car 2"})
    time.sleep(0.01)
    session.decide("bob", {"image_id": "img-2", "action": "reject", "reason": "text and image unrelated"})
    # img-3: both accept the same caption: no conflict
    session.decide("ann", {"image_id": "img-3", "action": "accept", "caption_index": 1, "text": "same"})
    session.decide("bob", {"image_id": "img-3", "action": "accept", "caption_index": 1, "text": "same"})
    session.store.close()
    out = tmp_path / "round1"
    assert main(["review", "export", str(dataset), str(out), "--finetune", str(tmp_path / "ft.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "2 pair(s) with reviewers who disagree" in printed and "img-2: ann accept; bob reject -> rejected" in printed
    summary = json.loads((out / "review.json").read_text())
    assert [c["image_id"] for c in summary["conflicts"]] == ["img-1", "img-2"]
    assert summary["conflicts"][0]["resolved"] == "kept, with bob's caption" and "latest" in summary["conflict_rule"]
    pairs, _ = read_kept_pairs(out, None, ReaderOptions())
    by_id = {p.image_id: p for p in pairs}
    assert "img-2" not in by_id
    humans = [c for c in by_id["img-1"].captions if c.source == "human"]
    assert [(c.params["reviewer"], c.selected) for c in humans] == [("ann", False), ("bob", True)]
    assert by_id["img-1"].selected().text == "a photo of a red car 1"
    finetune = [json.loads(line) for line in open(tmp_path / "ft.jsonl")]
    assert sorted((r["image_id"], r["caption"], r["reviewer"]) for r in finetune) == [
        ("img-1", "a photo of a red car 1", "bob"), ("img-3", "same", "bob")]  # one per image
    page = (out / "review.html").read_text()
    assert "Conflicts (2)" in page and "ann: edit: ann&#x27;s caption of img-1" in page
