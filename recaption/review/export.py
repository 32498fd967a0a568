"""``recaption review export DATASET OUTPUT``: the decisions of a round, back onto the pairs.

Each accept or edit becomes a caption with ``source="human"``, the round, the ``parent``
caption it started from, and in ``params`` the action, the reviewer, the word edit distance
to the parent and the time; it is selected as the training caption. A pair that a reviewer
rejected goes to ``OUTPUT/rejects/`` with stage ``review`` and the reason (nothing is lost).
The exported dataset is the next round's input. ``finetune`` also writes the round's
``{image, alt_text, caption, reviewer}`` records, one per image, the captioner's fine-tuning
set. ``OUTPUT/review.json`` has the acceptance rate per caption source, the mean edit
distance, the reject reasons, and the conflicts.

Two reviewers may disagree on a pair (cross-checks, or two people on one round). The rule
(``CONFLICT_RULE``): the pair is rejected when more of its reviewers rejected it than kept it,
or as many did and the latest decision was a reject; otherwise every accept and edit becomes a
human caption and the latest of them is the training caption (and the one fine-tuning
sample). Every disagreement is listed in ``review.json`` and ``review.html``, with who decided
what and how it was resolved.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from recaption.eval.evaluate import word_edit_distance
from recaption.eval.sources import source_key
from recaption.io import open_writer
from recaption.io.run_folder import REJECTS
from recaption.record import Caption, Pair
from recaption.review.images import embed_images
from recaption.review.session import ReviewSession

CONFLICT_RULE = ("rejected when more reviewers rejected the pair than kept it (a tie goes to the latest decision); "
                 "otherwise the latest accept or edit is the training caption and the others stay as unselected human captions")


def _verdict(d: Any) -> tuple[str, str]:
    return ("reject", d.reason) if d.action == "reject" else ("keep", d.text)


def resolve_conflict(ds: list[Any]) -> tuple[bool, Any]:
    """(rejected?, the decision whose caption is the training one): ``CONFLICT_RULE``."""
    by_time = sorted(ds, key=lambda d: d.at)
    rejects = [d for d in ds if d.action == "reject"]
    keeps = [d for d in by_time if d.action != "reject"]
    rejected = len(rejects) > len(keeps) or (len(rejects) == len(keeps) and by_time[-1].action == "reject")
    return rejected, (None if rejected else keeps[-1])


def apply_decisions(session: ReviewSession) -> tuple[list[Pair], dict[str, Any]]:
    decisions = session.store.current(session.round)
    by_pair: dict[str, list] = defaultdict(list)
    for (image_id, _), d in sorted(decisions.items()):
        by_pair[image_id].append(d)
    offered: Counter = Counter()
    accepted: Counter = Counter()
    distances: list[int] = []
    reasons: Counter = Counter()
    conflicts: list[dict[str, Any]] = []
    for pair in session.pairs:
        ds = by_pair.get(pair.image_id, [])
        if not ds:
            continue
        rejected, chosen = resolve_conflict(ds)
        if len({_verdict(d) for d in ds}) > 1:
            conflicts.append({
                "image_id": pair.image_id,
                "decisions": [{"reviewer": d.reviewer, "action": d.action, "text": d.text, "reason": d.reason, "at": d.at} for d in sorted(ds, key=lambda d: d.at)],
                "resolved": "rejected" if rejected else f"kept, with {chosen.reviewer}'s caption",
            })
        for d in ds:
            offered.update({source_key(c) for c in pair.captions if c.source != "human"})
            if d.action == "reject":
                reasons[d.reason] += 1
                if not rejected:
                    continue
                detail = f"{d.reviewer}: {d.reason}"
                if pair.reject is None:
                    pair.reject_with("review", "rejected_by_reviewer", detail)
                else:
                    pair.reject.detail += f"; {detail}"
                continue
            parent = d.caption_index if d.caption_index is not None and 0 <= d.caption_index < len(pair.captions) else None
            base = pair.captions[parent].text if parent is not None else (pair.texts[0] if pair.texts else "")
            distance = word_edit_distance(base, d.text)
            distances.append(distance)
            if d.action == "accept" and parent is not None:
                accepted[source_key(pair.captions[parent])] += 1
            if d is chosen:
                pair.select(None)
            pair.captions.append(Caption(
                d.text, "human", round=session.round, parent=parent, selected=d is chosen,
                params={"action": d.action, "reviewer": d.reviewer, "edit_distance": distance, "decided_at": d.at},
            ))
    n = sum(len(v) for v in by_pair.values())
    summary = {
        "round": session.round, "decisions": n, "pairs_decided": len(by_pair), "pairs": len(session.pairs),
        "actions": dict(Counter(d.action for d in decisions.values())),
        "acceptance_rate_by_source": {k: round(100 * accepted[k] / offered[k], 2) for k in offered},
        "mean_edit_distance": round(sum(distances) / len(distances), 3) if distances else None,
        "reject_reasons": dict(reasons),
        "conflicts": conflicts,
        "conflict_rule": CONFLICT_RULE,
    }
    return session.pairs, summary


def _read_lines(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def export_round(session: ReviewSession, output: Path, finetune: Path | None = None) -> dict[str, Any]:
    pairs, summary = apply_decisions(session)
    embed_images(pairs, session.image_roots)  # the round holds its images: the next round serves them from its own folder
    kept = [p for p in pairs if p.reject is None]
    rejected = [p for p in pairs if p.reject is not None]
    open_writer("jsonl", output).write("part-00000", kept)
    kept_paths = {rec["image_id"]: rec["image_path"] for rec in _read_lines(output / "part-00000.jsonl")}
    if rejected:
        open_writer("jsonl", output / REJECTS).write("part-00000", rejected)  # as a run folder holds them: no reader takes them for input
    if finetune is not None:
        finetune.parent.mkdir(parents=True, exist_ok=True)
        with open(finetune, "w", encoding="utf-8") as fh:
            for pair in kept:  # one sample per image: the round's training caption (CONFLICT_RULE)
                for cap in pair.captions:
                    if cap.source == "human" and cap.round == session.round and cap.selected and isinstance(pair.image, (str, bytes)):
                        image = pair.image if isinstance(pair.image, str) else str((output / kept_paths[pair.image_id]).resolve())
                        record = {"image": image, "image_id": pair.image_id, "alt_text": pair.texts[0] if pair.texts else "", "caption": cap.text,
                                  "reviewer": cap.params.get("reviewer")}
                        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary.update(kept=len(kept), rejected=len(rejected), output=str(output), finetune=str(finetune) if finetune else None)
    (output / "review.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output / "review.html").write_text(summary_page(summary))
    return summary


def summary_page(summary: dict[str, Any]) -> str:
    """The round at a glance: decisions, acceptance per caption source, edit distance, rejects."""
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{v:.1f} %</td></tr>" for k, v in sorted(summary["acceptance_rate_by_source"].items()))
    reasons = "".join(f"<tr><td>{esc(k)}</td><td>{n}</td></tr>" for k, n in sorted(summary["reject_reasons"].items(), key=lambda kv: -kv[1]))
    actions = ", ".join(f"{n} {esc(a)}" for a, n in summary["actions"].items()) or "none"
    conflicts = "".join(
        f"<tr><td>{esc(c['image_id'])}</td><td>"
        + "<br>".join(esc(f"{d['reviewer']}: {d['action']}" + (f" ({d['reason']})" if d["action"] == "reject" else f": {d['text']}")) for d in c["decisions"])
        + f"</td><td>{esc(c['resolved'])}</td></tr>"
        for c in summary["conflicts"]
    )
    distance = "—" if summary["mean_edit_distance"] is None else f"{summary['mean_edit_distance']:.2f} words"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>recaption review, round '
        f"{summary['round']}</title><style>body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:900px;padding:0 16px}}"
        "td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}</style></head><body>"
        f"<h1>Review round {summary['round']}</h1><p>{summary['decisions']} decisions on {summary['pairs_decided']} of {summary['pairs']} pairs: {actions}. "
        f"Mean edit distance to the starting caption: {distance}. {summary['kept']} pairs kept, {summary['rejected']} rejected.</p>"
        f"<h2>Accepted as it was, per caption source</h2><table><tr><th>source</th><th>acceptance</th></tr>{rows}</table>"
        f"<h2>Reject reasons</h2><table><tr><th>reason</th><th>pairs</th></tr>{reasons}</table>"
        f"<h2>Conflicts ({len(summary['conflicts'])})</h2><p>Reviewers who disagreed on a pair; the rule: {esc(summary['conflict_rule'])}.</p>"
        f"<table><tr><th>pair</th><th>decisions, in time order</th><th>resolved</th></tr>{conflicts}</table></body></html>\n"
    )
