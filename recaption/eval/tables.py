"""The evaluation's files: ``eval.json`` (everything), ``eval.csv`` (one row per source),
``eval.md`` and ``eval.html`` (the tables with deltas against the alt-text row, the rounds
table, what could not be measured and why, and where the time went). When the evaluated
input is a ``recaption run`` output folder, the HTML section is also put into its
``report.html`` (replacing an earlier one)."""

from __future__ import annotations

import csv
import html
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recaption.eval.evaluate import COLUMNS, ROUND_COLUMNS, EvalResult
from recaption.io.run_folder import RunFolder

START, END = "<!-- recaption eval -->", "<!-- /recaption eval -->"


def _present(rows: dict[str, dict[str, float]], columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, title) for k, title in columns if any(k in row and not math.isnan(row[k]) for row in rows.values())]


def _cell(value: float | None, delta: float | None = None, whole: bool = False) -> str:
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.0f}" if whole else f"{value:.1f}"
    return text + (f" ({delta:+.1f})" if delta is not None else "")


def table_rows(result: EvalResult) -> tuple[list[tuple[str, str]], list[list[str]]]:
    columns = _present(result.rows, COLUMNS)
    deltas = result.deltas()
    body = []
    for name, row in result.rows.items():
        body.append([name] + [_cell(row.get(k), deltas.get(name, {}).get(k), whole=k == "n") for k, _ in columns])
    return columns, body


def write_eval(output: Path, result: EvalResult, meta: dict[str, Any], run_folder: Path | None = None) -> None:
    output.mkdir(parents=True, exist_ok=True)
    payload = {"rows": result.rows, "deltas_vs_alt_text": result.deltas(), "rounds": result.rounds, "references": result.references,
               "missing": result.missing, "seconds": result.seconds, **meta}
    (output / "eval.json").write_text(json.dumps(payload, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v) + "\n")
    columns = _present(result.rows, COLUMNS)
    with open(output / "eval.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source"] + [k for k, _ in columns])
        for name, row in result.rows.items():
            writer.writerow([name] + ["" if math.isnan(row.get(k, math.nan)) else round(row[k], 4) for k, _ in columns])
    (output / "eval.md").write_text(markdown(result, meta))
    section = html_section(result, meta)
    (output / "eval.html").write_text(f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>recaption eval</title>{PAGE_STYLE}</head><body>{section}</body></html>\n")
    report = RunFolder(run_folder).report if run_folder is not None else None
    if report is not None and report.exists():
        add_to_report(report, section)


def markdown(result: EvalResult, meta: dict[str, Any]) -> str:
    columns, body = table_rows(result)
    lines = [f"# Evaluation of {meta.get('input', '')}", "", f"References: {result.references or 'none'}. Deltas in brackets are against the alt-text row.", ""]
    lines += ["| source | " + " | ".join(t for _, t in columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    if result.rounds:
        rcols = _present(result.rounds, ROUND_COLUMNS)
        lines += ["", "## Rounds", "", "| source | " + " | ".join(t for _, t in rcols) + " |", "|---|" + "---:|" * len(rcols)]
        lines += ["| " + name + " | " + " | ".join(_cell(row.get(k), whole=k == "n") for k, _ in rcols) + " |" for name, row in result.rounds.items()]
    if result.missing:
        lines += ["", "## Not measured", ""] + [f"- {key}: {why}" for key, why in result.missing.items()]
    lines += ["", "## Time", ""] + [f"- {name}: {s:.1f} s" for name, s in sorted(result.seconds.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines) + "\n"


PAGE_STYLE = "<style>body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;padding:0 16px}</style>"
SECTION_STYLE = (
    "<style>.eval table{border-collapse:collapse;margin:8px 0}.eval td,.eval th{padding:4px 8px;border-bottom:1px solid #eee;text-align:right}"
    ".eval td:first-child,.eval th:first-child{text-align:left}.eval .muted{color:#777}.eval .scroll{overflow-x:auto}</style>"
)


def html_section(result: EvalResult, meta: dict[str, Any]) -> str:
    columns, body = table_rows(result)
    esc = html.escape
    parts = [START, SECTION_STYLE, '<section class="eval"><h2>Evaluation</h2>',
             f'<p class="muted">{esc(str(meta.get("input", "")))} · references: {esc(result.references or "none")} · deltas in brackets against the alt-text row</p>',
             '<div class="scroll"><table><tr><th>source</th>' + "".join(f"<th>{esc(t)}</th>" for _, t in columns) + "</tr>"]
    parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body]
    parts.append("</table></div>")
    if result.rounds:
        rcols = _present(result.rounds, ROUND_COLUMNS)
        parts.append("<h3>Rounds</h3><table><tr><th>source</th>" + "".join(f"<th>{esc(t)}</th>" for _, t in rcols) + "</tr>")
        parts += ["<tr><td>" + esc(name) + "</td>" + "".join(f"<td>{esc(_cell(row.get(k), whole=k == 'n'))}</td>" for k, _ in rcols) + "</tr>" for name, row in result.rounds.items()]
        parts.append("</table>")
    if result.missing:
        parts.append("<h3>Not measured</h3><ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in result.missing.items()) + "</ul>")
    parts += ["</section>", END]
    return "\n".join(parts)


SLOT = "<!-- recaption eval slot -->"  # where the run's report keeps a place for it: after the summary


def add_to_report(report: Path, section: str) -> None:
    """Put the evaluation in a run's report, after its summary (replacing an earlier one), with
    a line that says when it was added."""

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = section.replace("<h2>Evaluation</h2>", f'<h2>Evaluation</h2><p class="muted">Added to this run\'s report by '
                              f"<code>recaption eval</code> on {when}; the rest of the page is the run's own.</p>", 1)
    page = report.read_text(encoding="utf-8")
    if START in page and END in page:
        page = page[: page.index(START)] + section + page[page.index(END) + len(END) :]
    elif SLOT in page:
        page = page.replace(SLOT, SLOT + "\n" + section, 1)
    else:  # a report from before the slot existed
        page = page.replace("</body>", section + "\n</body>", 1) if "</body>" in page else page + section
    report.write_text(page, encoding="utf-8")
