"""Label Studio round trip: tasks and config out, a Label Studio JSON export back in, and the
same human captions as the review page would give."""

import json
import xml.etree.ElementTree as ET

from recaption.cli import main
from recaption.io import read_kept_pairs
from recaption.io.base import ReaderOptions
from recaption.review.session import ReviewSession
from tests.review.test_server import dataset  # noqa: F401 - the fixture


def annotation(annotation_id, user, decision, caption=None, reason=None, cancelled=False):
    """One annotation as Label Studio's JSON export writes it."""
    result = [{"id": f"d{annotation_id}", "from_name": "decision", "to_name": "image", "type": "choices", "origin": "manual", "value": {"choices": [decision]}}]
    if caption is not None:
        result.append({"id": f"c{annotation_id}", "from_name": "caption", "to_name": "image", "type": "textarea", "origin": "manual", "value": {"text": [caption]}})
    if reason is not None:
        result.append({"id": f"r{annotation_id}", "from_name": "reject_reason", "to_name": "image", "type": "textarea", "origin": "manual", "value": {"text": [reason]}})
    return {"id": annotation_id, "completed_by": user, "result": result, "was_cancelled": cancelled, "ground_truth": False,
            "created_at": "2026-11-23T10:00:00.000000Z", "updated_at": "2026-11-23T10:00:00.000000Z", "lead_time": 4.2, "task": annotation_id}


def test_tasks_out_and_annotations_back_in(dataset, tmp_path):  # noqa: F811 - the fixture
    assert main(["review", "labelstudio", "export", str(dataset), str(tmp_path / "ls")]) == 0
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    config = ET.fromstring((tmp_path / "ls" / "config.xml").read_text())
    names = {el.get("name") for el in config.iter() if el.get("name")}
    assert {"image", "alt_text", "candidates", "caption", "decision", "reject_reason"} <= names
    # "escape" names a file outside the dataset's tree: the reader refuses it (read/outside_input).
    assert {t["data"]["image_id"] for t in tasks} == {"img-0", "img-1", "img-2", "img-3"}
    first = next(t for t in tasks if t["data"]["image_id"] == "img-1")["data"]
    # One folder of images, whether the input's or rewritten by the run: one document root.
    assert first["image"] == "/data/local-files/?d=images/000001_img-1.jpg" and first["candidates"].startswith("1. [alt-text] a red car 1")
    assert (tmp_path / "ls" / "images" / "000001_img-1.jpg").read_bytes() == (dataset.parent / "images" / "1.jpg").read_bytes()
    assert "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" + str((tmp_path / "ls").resolve()) in (tmp_path / "ls" / "README.md").read_text()

    # What Label Studio exports after annotation (its JSON format: tasks with data and annotations).
    exported = []
    for i, task in enumerate(tasks, 1):
        task = {"id": i, "data": task["data"], "annotations": [], "predictions": [], "project": 7,
                "created_at": "2026-11-23T09:00:00.000000Z", "updated_at": "2026-11-23T10:00:00.000000Z"}
        image_id = task["data"]["image_id"]
        if image_id == "img-1":
            task["annotations"].append(annotation(1, 3, "edit", caption="a photo of a shiny red car 1"))
        if image_id == "img-2":
            task["annotations"].append(annotation(2, {"id": 4, "email": "bob@example.com"}, "accept", caption="a photo of a red car 2"))
        if image_id == "img-3":
            task["annotations"].append(annotation(3, 3, "reject", reason="image unreadable"))
            task["annotations"].append(annotation(4, 5, "accept", caption="x", cancelled=True))
        exported.append(task)
    (tmp_path / "export.json").write_text(json.dumps(exported))
    assert main(["review", "labelstudio", "import", str(dataset), str(tmp_path / "export.json")]) == 0
    assert main(["review", "export", str(dataset), str(tmp_path / "round1")]) == 0

    pairs = {p.image_id: p for p in read_kept_pairs(tmp_path / "round1", None, ReaderOptions())[0]}
    edited = [c for c in pairs["img-1"].captions if c.source == "human"][0]
    assert (edited.text, edited.params["action"], edited.parent, edited.params["reviewer"]) == ("a photo of a shiny red car 1", "edit", 1, "labelstudio:3")
    accepted = [c for c in pairs["img-2"].captions if c.source == "human"][0]
    assert (accepted.params["action"], accepted.parent, accepted.params["edit_distance"], accepted.params["reviewer"]) == ("accept", 1, 0, "labelstudio:bob@example.com")
    assert "img-3" not in pairs  # rejected, with the reason, in round1/rejects
    assert "image unreadable" in (tmp_path / "round1" / "rejects" / "part-00000.jsonl").read_text()

    # The review page's own decisions for the same pairs give the same captions.
    page = ReviewSession.open(dataset, store=tmp_path / "page.sqlite")
    page.decide("labelstudio:3", {"image_id": "img-1", "action": "edit", "caption_index": 1, "text": "a photo of a shiny red car 1"})
    decided = page.store.current(1)
    imported = ReviewSession.open(dataset).store.current(1)
    key = ("img-1", "labelstudio:3")
    assert (decided[key].action, decided[key].caption_index, decided[key].text) == (imported[key].action, imported[key].caption_index, imported[key].text)
