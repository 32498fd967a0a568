"""Label Studio round trip, for teams that review there.

``export``: the pairs as Label Studio tasks (``tasks.json``: ``data`` holds the image, the
alt-text, the previous round's caption, the numbered candidates) and the labeling config
(``config.xml``: the image, the texts, a caption text area filled with the previous caption,
a choice of accept / edit / reject, and a reason for rejects).

``import``: a Label Studio export of those tasks (``JSON``, or the flat ``JSON_MIN``) back
into the review store, as the review page would have saved them (reviewer
``labelstudio:<annotator>``), so that ``recaption review export`` writes the same human
captions either way. A submitted text equal to a candidate is an accept of that candidate;
any other text is an edit of the candidate it is nearest to (word edit distance). Cancelled
(skipped) annotations are left out. The import is all or nothing (one transaction), a
malformed task is counted and skipped with its reason, and importing the same export again
adds nothing (a decision the reviewer already has as their latest is not stored twice).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from recaption.eval.evaluate import word_edit_distance
from recaption.io.safejson import RecordProblem, load_record, read_small_file
from recaption.limits import MAX_TEXT_CHARS
from recaption.review.session import ReviewSession

MAX_EXPORT_BYTES = 512 * 1024 * 1024  # a Label Studio export read whole (it is one JSON document)
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
    source = session.image_source(k)
    if isinstance(source, Path):
        root = next(r for r in session.image_roots if r in source.parents)
        return prefix + quote(str(source.relative_to(root)))
    found = session.image_bytes(k)  # bytes: only a real image goes out, as a data URI
    if found is None:
        return ""
    data, kind = found
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


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


def _strings(value: Any) -> list[str]:
    """A result's value as strings: JSON has {"choices": [...]} / {"text": [...]}, JSON_MIN a
    plain string, a list, or {"choices": [...]} where several were chosen."""
    if isinstance(value, dict):
        value = value.get("choices") or value.get("text") or []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _result(annotation: dict[str, Any], name: str) -> list[str]:
    regions = annotation.get("result")
    if not isinstance(regions, list):
        raise ValueError("its 'result' is not a list")
    for region in regions:
        if isinstance(region, dict) and region.get("from_name") == name:
            return _strings(region.get("value"))
    return []


def _annotator(who: Any) -> str:
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return f"labelstudio:{str(who)[:64] if who is not None and who != '' else 'unknown'}"


def _annotations(task: dict[str, Any]) -> list[tuple[str, str, list[str], list[str], bool]]:
    """(annotator, decision, caption, reject reason, cancelled) for each annotation of a task,
    from either export format."""
    if "annotations" in task:  # JSON
        annotations = task["annotations"]
        if not isinstance(annotations, list):
            raise ValueError("its 'annotations' is not a list")
        out = []
        for a in annotations:
            if not isinstance(a, dict):
                raise ValueError("an annotation is not an object")
            choice = (_result(a, "decision") or [""])[0]
            out.append((_annotator(a.get("completed_by")), choice, _result(a, "caption"), _result(a, "reject_reason"), bool(a.get("was_cancelled"))))
        return out
    if "decision" in task:  # JSON_MIN: one flat row per annotation, the data fields beside
        choice = (_strings(task.get("decision")) or [""])[0]
        return [(_annotator(task.get("annotator")), choice, _strings(task.get("caption")), _strings(task.get("reject_reason")), False)]
    return []


def import_annotations(session: ReviewSession, export_file: Path) -> dict[str, int]:
    """A Label Studio export -> decisions in the review store, all at once. Counts what was done."""
    try:
        tasks = load_record(read_small_file(Path(export_file), str(export_file), limit=MAX_EXPORT_BYTES), str(export_file))
    except RecordProblem as exc:
        raise ValueError(f"{export_file} cannot be read as a Label Studio export: {exc}") from None
    if not isinstance(tasks, list):
        raise ValueError(f"{export_file} is not a Label Studio JSON or JSON_MIN export (a list of tasks)")
    positions = {p.image_id: k for k, p in enumerate(session.pairs)}
    counts = {"decisions": 0, "already_imported": 0, "skipped": 0, "unknown_pairs": 0, "malformed": 0}
    latest = session.store.current(session.round)
    rows: list[tuple[str, str, str, int | None, str, str]] = []
    for n, task in enumerate(tasks):
        try:
            if not isinstance(task, dict):
                raise ValueError("not an object")
            data = task.get("data") if isinstance(task.get("data"), dict) else task  # JSON_MIN: the data fields at the top
            image_id = data.get("image_id")
            if not isinstance(image_id, str) or image_id not in positions:
                counts["unknown_pairs"] += 1
                continue
            annotations = _annotations(task)
        except ValueError as exc:
            counts["malformed"] += 1
            counts.setdefault("first_malformed", f"task {n + 1}: {exc}")  # type: ignore[arg-type]
            continue
        candidates = session.item(positions[image_id])["candidates"]
        for reviewer, choice, caption, reason, cancelled in annotations:
            if cancelled or choice not in ("accept", "edit", "reject"):
                counts["skipped"] += 1
                continue
            if choice == "reject":
                row = (image_id, reviewer, "reject", None, "", " ".join(reason).strip()[:2000] or "rejected in Label Studio")
            else:
                text = " ".join(caption).strip() or str(data.get("previous") or "")
                if not text:
                    counts["skipped"] += 1
                    continue
                same = next((c for c in candidates if c["text"] == text), None)
                nearest = same or min(candidates, key=lambda c: word_edit_distance(c["text"], text), default=None)
                index = nearest["index"] if nearest and nearest["index"] >= 0 else None
                row = (image_id, reviewer, "accept" if same else "edit", index, text[:MAX_TEXT_CHARS], "")
            before = latest.get((image_id, reviewer))
            if before is not None and (before.action, before.caption_index, before.text, before.reason) == row[2:]:
                counts["already_imported"] += 1
                continue
            rows.append(row)
    session.store.add_many(session.round, rows)
    counts["decisions"] = len(rows)
    return counts
