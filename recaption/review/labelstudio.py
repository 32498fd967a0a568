"""Label Studio round trip, for teams that review there.

``export``: the pairs as Label Studio tasks (``tasks.json``: ``data`` holds the image, the
alt-text, the previous round's caption, the numbered candidates) and the labeling config
(``config.xml``: the image, the texts, a caption text area filled with the previous caption,
a choice of accept / edit / reject, and a reason for rejects).

``import``: a Label Studio JSON export of those tasks back into the review store, as the
review page would have saved them (reviewer ``labelstudio:<annotator>``), so that
``recaption review export`` writes the same human captions either way. A submitted text equal
to a candidate is an accept of that candidate; any other text is an edit of the candidate it
is nearest to (word edit distance). Cancelled (skipped) annotations are left out.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from recaption.eval.evaluate import word_edit_distance
from recaption.review.session import ReviewSession

LABELING_CONFIG = """<View>
  <Image name="image" value="$image" maxWidth="640px"/>
  <Header value="Original alt-text"/>
  <Text name="alt_text" value="$alt_text"/>
  <Header value="Candidates"/>
  <Text name="candidates" value="$candidates"/>
  <Header value="Caption (keep it to accept the previous caption, or edit it; the guideline applies)"/>
  <TextArea name="caption" toName="image" value="$previous" editable="true" maxSubmissions="1" rows="4"/>
  <Choices name="decision" toName="image" choice="single" required="true" showInline="true">
    <Choice value="accept"/>
    <Choice value="edit"/>
    <Choice value="reject"/>
  </Choices>
  <TextArea name="reject_reason" toName="image" placeholder="why reject this pair" maxSubmissions="1"/>
</View>
"""


def image_value(session: ReviewSession, k: int, prefix: str) -> str:
    """How Label Studio finds the image: a local-files URL below the image root, or the bytes
    themselves as a data URI."""
    found = session.image_bytes(k)
    if found is None:
        return ""
    data, kind = found
    if isinstance(data, bytes):
        return f"data:{kind};base64,{base64.b64encode(data).decode()}"
    root = next(r for r in session.image_roots if r in data.parents)
    return prefix + quote(str(data.relative_to(root)))


def export_tasks(session: ReviewSession, output: Path, image_prefix: str = "/data/local-files/?d=") -> int:
    output.mkdir(parents=True, exist_ok=True)
    tasks = []
    for k in range(len(session.pairs)):
        item = session.item(k)
        numbered = "\n".join(f"{n}. [{c['source']}] {c['text']}" for n, c in enumerate(item["candidates"], 1))
        tasks.append({"data": {
            "image": image_value(session, k, image_prefix), "image_id": item["image_id"], "alt_text": item["alt_text"],
            "previous": item["previous"]["text"], "candidates": numbered, "round": session.round,
        }})
    (output / "tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
    (output / "config.xml").write_text(LABELING_CONFIG)
    return len(tasks)


def _result(annotation: dict[str, Any], name: str) -> list[str]:
    for region in annotation.get("result") or []:
        if region.get("from_name") == name:
            value = region.get("value") or {}
            return [str(v) for v in (value.get("choices") or value.get("text") or [])]
    return []


def _annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"labelstudio:{who if who is not None else 'unknown'}"


def import_annotations(session: ReviewSession, export_file: Path) -> dict[str, int]:
    """Label Studio's JSON export -> decisions in the review store. Counts what was done."""
    tasks = json.loads(Path(export_file).read_text())
    if not isinstance(tasks, list):
        raise ValueError(f"{export_file} is not a Label Studio JSON export (a list of tasks)")
    positions = {p.image_id: k for k, p in enumerate(session.pairs)}
    counts = {"decisions": 0, "skipped": 0, "unknown_pairs": 0}
    for task in tasks:
        image_id = (task.get("data") or {}).get("image_id")
        if image_id not in positions:
            counts["unknown_pairs"] += 1
            continue
        candidates = session.item(positions[image_id])["candidates"]
        for annotation in task.get("annotations") or []:
            choice = (_result(annotation, "decision") or [""])[0]
            if annotation.get("was_cancelled") or choice not in ("accept", "edit", "reject"):
                counts["skipped"] += 1
                continue
            reviewer = _annotator(annotation)
            if choice == "reject":
                reason = " ".join(_result(annotation, "reject_reason")).strip() or "rejected in Label Studio"
                session.store.add(image_id, reviewer, session.round, "reject", reason=reason)
            else:
                text = " ".join(_result(annotation, "caption")).strip() or (task.get("data") or {}).get("previous", "")
                same = next((c for c in candidates if c["text"] == text), None)
                nearest = same or min(candidates, key=lambda c: word_edit_distance(c["text"], text), default=None)
                index = nearest["index"] if nearest and nearest["index"] >= 0 else None
                session.store.add(image_id, reviewer, session.round, "accept" if same else "edit", index, text)
            counts["decisions"] += 1
    return counts
