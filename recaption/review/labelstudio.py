"""Label Studio round trip, for teams that review there.

``export``: the pairs as Label Studio tasks (``tasks.json``: ``data`` holds the image, the
alt-text, the previous round's caption, the numbered candidates), the labeling config
(``config.xml``: the image, the texts, a caption text area filled with the previous caption,
a choice of accept / edit / reject, and a reason for rejects), the images copied into the
export's ``images/`` (one document root serves them all) and a README with the settings.

``push``: the export into a running Label Studio (project, Local Files storage, tasks).

``import``: a Label Studio export of those tasks (``JSON``, or the flat ``JSON_MIN``; a file,
or read from the server with the annotators' e-mails) back into the review store, as the
review page would have saved them (reviewer ``labelstudio:<e-mail>``, or the user id where
only that is known), so that ``recaption review export`` writes the same human
captions either way. A submitted text equal to a candidate is an accept of that candidate;
any other text is an edit of the candidate it is nearest to (word edit distance). Cancelled
(skipped) annotations are left out. The import is all or nothing (one transaction), a
malformed task is counted and skipped with its reason, and importing the same export again
adds nothing (a decision the reviewer already has as their latest is not stored twice).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from recaption.errors import UsageError
from recaption.eval.evaluate import word_edit_distance
from recaption.io.safejson import RecordProblem, load_record, read_small_file
from recaption.limits import MAX_TEXT_CHARS
from recaption.review.labelstudio_api import LabelStudioClient, LabelStudioError
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


LOCAL_FILES = "/data/local-files/?d="  # how Label Studio serves a file below its document root
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif", "image/bmp": "bmp"}
SETTINGS_NAME = "labelstudio.json"  # what push needs: the image folder to attach as a storage


def export_tasks(session: ReviewSession, output: Path, image_prefix: str = LOCAL_FILES, document_root: Path | None = None) -> dict[str, Any]:
    """The pairs as Label Studio tasks in OUTPUT: each image copied into OUTPUT/images/ (the
    input's, or the one the run rewrote: one folder, so one document root serves them all),
    ``tasks.json``, ``config.xml``, and a README with the exact Label Studio settings."""
    output = output.resolve()
    root = (document_root or output).resolve()
    if root != output and root not in output.parents:
        raise UsageError(f"{output} is not inside the document root {root}: Label Studio serves only files below it")
    images = output / "images"
    images.mkdir(parents=True, exist_ok=True)
    tasks, missing = [], []
    for k in range(len(session.pairs)):
        item = session.item(k)
        found = session.image_bytes(k)  # a real image only (its bytes say so), read within the limits
        image = ""
        if found is None:
            missing.append(item["image_id"])
        else:
            data, kind = found
            name = f"{k:06d}_{_SAFE_NAME.sub('_', item['image_id'])[:60]}.{EXTENSIONS.get(kind, 'jpg')}"
            (images / name).write_bytes(data)
            image = image_prefix + quote(str((images / name).relative_to(root)))
        numbered = "\n".join(f"{n}. [{c['source']}] {c['text']}" for n, c in enumerate(item["candidates"], 1))
        tasks.append({"data": {
            "image": image, "image_id": item["image_id"], "alt_text": item["alt_text"],
            "previous": item["previous"]["text"], "candidates": numbered, "round": session.round,
        }})
    (output / "tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
    (output / "config.xml").write_text(LABELING_CONFIG)
    settings = {"document_root": str(root), "images": str(images), "image_prefix": image_prefix, "tasks": len(tasks), "round": session.round}
    (output / SETTINGS_NAME).write_text(json.dumps(settings, indent=1) + "\n")
    (output / "README.md").write_text(_readme(output, root, images, image_prefix == LOCAL_FILES))
    return {**settings, "missing_images": missing}


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def _readme(output: Path, root: Path, images: Path, local_files: bool) -> str:
    serving = (
        "Label Studio serves the images from this folder (one document root for all of them). Start it with\n\n"
        "```\n"
        f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} label-studio start\n"
        "```\n\n"
    ) if local_files else "The tasks name the images by the prefix you gave; serve `images/` there.\n\n"
    return (
        "# Label Studio tasks written by recaption\n\n"
        f"`tasks.json` ({images.name}/ holds their images), `config.xml` (the labeling interface).\n\n"
        + serving
        + "Then, with a token from Account & Settings (Personal Access Token):\n\n"
        "```\n"
        f"recaption review labelstudio push {output} --url http://localhost:8080 --token TOKEN\n"
        "```\n\n"
        "creates the project with the labeling config, attaches the image folder as a Local Files\n"
        "storage and imports the tasks. By hand instead: create a project, paste `config.xml` under\n"
        f"Settings > Labeling Interface > Code, add Settings > Cloud Storage > Add Source Storage > Local\n"
        f"files with the absolute path `{images}` (no sync needed), and import `tasks.json`.\n\n"
        "When the reviewers are done:\n\n"
        "```\n"
        "recaption review labelstudio import DATASET --url http://localhost:8080 --project ID --token TOKEN\n"
        "```\n\n"
        "reads their annotations, and records each reviewer by their Label Studio e-mail.\n"
    )


def push(output: Path, client: LabelStudioClient, title: str) -> dict[str, Any]:
    """A new project in Label Studio with the export's config, its image folder attached as a
    Local Files storage, and its tasks; checks that Label Studio serves the first image."""
    output = output.resolve()
    try:
        settings = json.loads((output / SETTINGS_NAME).read_text(encoding="utf-8"))
        tasks = json.loads((output / "tasks.json").read_text(encoding="utf-8"))
        config = (output / "config.xml").read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{output} is not a `recaption review labelstudio export` folder: {exc}") from None
    project = client.post("/api/projects", {"title": title[:50], "label_config": config})
    pid = project["id"]
    if settings.get("image_prefix") == LOCAL_FILES:
        try:
            client.post("/api/storages/localfiles", {"project": pid, "path": settings["images"], "title": "recaption images", "use_blob_urls": False})
        except LabelStudioError as exc:
            raise LabelStudioError(f"{exc}. Label Studio must serve local files below {settings['document_root']}: start it with "
                                   f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={settings['document_root']}") from None
    client.post(f"/api/projects/{pid}/import", tasks)
    first = next((t["data"]["image"] for t in tasks if t["data"]["image"].startswith(LOCAL_FILES)), None)
    if first is not None:
        status, _ = client.fetch(first)
        if status != 200:
            raise LabelStudioError(f"project {pid} was made, but Label Studio answers {status} for its first image ({first}): is "
                                   f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={settings['document_root']}?")
    return {"project": pid, "tasks": len(tasks), "url": f"{client.url}/projects/{pid}/data"}


def fetch_annotations(client: LabelStudioClient, project: int) -> tuple[list[Any], dict[int, str]]:
    """A project's tasks with their annotations (Label Studio's JSON export) and its users' e-mails."""
    tasks = client.get(f"/api/projects/{int(project)}/export?exportType=JSON")
    if not isinstance(tasks, list):
        raise LabelStudioError(f"project {project}'s export is not a list of tasks")
    return tasks, client.users()


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


def _annotator(who: Any, users: dict[int, str]) -> str:
    """The reviewer: Label Studio's user e-mail where it is known, else its user id."""
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    if isinstance(who, int) and not isinstance(who, bool) and who in users:
        who = users[who]
    return f"labelstudio:{str(who)[:64] if who is not None and who != '' else 'unknown'}"


def _annotations(task: dict[str, Any], users: dict[int, str]) -> list[tuple[str, str, list[str], list[str], bool]]:
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
            out.append((_annotator(a.get("completed_by"), users), choice, _result(a, "caption"), _result(a, "reject_reason"), bool(a.get("was_cancelled"))))
        return out
    if "decision" in task:  # JSON_MIN: one flat row per annotation, the data fields beside
        choice = (_strings(task.get("decision")) or [""])[0]
        return [(_annotator(task.get("annotator"), users), choice, _strings(task.get("caption")), _strings(task.get("reject_reason")), False)]
    return []


def read_export(export_file: Path) -> list[Any]:
    """A Label Studio JSON or JSON_MIN export file (a list of tasks)."""
    try:
        tasks = load_record(read_small_file(Path(export_file), str(export_file), limit=MAX_EXPORT_BYTES), str(export_file))
    except RecordProblem as exc:
        raise UsageError(f"{export_file} cannot be read as a Label Studio export: {exc}") from None
    if not isinstance(tasks, list):
        raise UsageError(f"{export_file} is not a Label Studio JSON or JSON_MIN export (a list of tasks)")
    return tasks


def import_annotations(session: ReviewSession, tasks: list[Any], users: dict[int, str] | None = None) -> dict[str, int]:
    """Label Studio's annotated tasks -> decisions in the review store, all at once; ``users``
    (id -> e-mail) names the reviewers an export gives by id. Counts what was done."""
    users = users or {}
    positions = {p.image_id: k for k, p in enumerate(session.pairs)}
    counts = {"decisions": 0, "already_imported": 0, "skipped": 0, "unknown_pairs": 0, "malformed": 0, "reviewers_by_id": 0}
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
            annotations = _annotations(task, users)
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
            if reviewer.removeprefix("labelstudio:").isdigit():
                counts["reviewers_by_id"] += 1
            before = latest.get((image_id, reviewer))
            if before is not None and (before.action, before.caption_index, before.text, before.reason) == row[2:]:
                counts["already_imported"] += 1
                continue
            rows.append(row)
    session.store.add_many(session.round, rows)
    counts["decisions"] = len(rows)
    return counts
