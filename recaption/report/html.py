"""The run report: one self-contained HTML file (inline SVG charts, inline thumbnails).

Everything that comes from the data is escaped by Jinja2's autoescaping: alt-text is
hostile input and the report is opened in a browser.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from recaption.io.base import atomic_path


def _bins(counts: dict[int, int], width: int, upper: int | None = None) -> list[tuple[int, int]]:
    if not counts:
        return []
    top = max(counts) if upper is None else min(max(counts), upper)
    edges = range(0, top + width, width)
    out = [(lo, 0) for lo in edges]
    for value, n in counts.items():
        i = min(int(value) // width, len(out) - 1)
        out[i] = (out[i][0], out[i][1] + n)
    return out


def svg_histogram(counts: dict[int, int], bin_width: int, label: str, marker: int | None = None, color: str = "#4c78a8") -> Markup:
    bins = _bins({**counts, marker: counts.get(marker, 0)} if marker is not None else counts, bin_width)
    if not bins:
        return Markup('<p class="muted">no data</p>')
    w, h, pad = 560, 160, 28
    peak = max(n for _, n in bins) or 1
    bar_w = (w - 2 * pad) / len(bins)
    parts = [f'<svg viewBox="0 0 {w} {h + 34}" class="chart" role="img" aria-label="{escape(label)}">']
    for i, (lo, n) in enumerate(bins):
        bh = (h - pad) * n / peak
        x = pad + i * bar_w
        parts.append(
            f'<rect x="{x:.1f}" y="{h - bh:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{bh:.1f}" fill="{color}">'
            f"<title>{lo}–{lo + bin_width - 1}: {n}</title></rect>"
        )
    step = max(1, math.ceil(len(bins) / 8))
    for i in range(0, len(bins), step):
        parts.append(f'<text x="{pad + i * bar_w:.1f}" y="{h + 14}" class="tick">{bins[i][0]}</text>')
    if marker is not None and bins:
        mx = pad + (marker / bin_width) * bar_w
        parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="4" y2="{h}" class="marker"/>')
        parts.append(f'<text x="{mx + 3:.1f}" y="14" class="tick">{marker}</text>')
    parts.append(f'<text x="{pad}" y="{h + 30}" class="axis">{escape(label)} (peak {peak})</text></svg>')
    return Markup("".join(parts))


def _size_width(counts: dict[int, int]) -> int:
    top = max(counts) if counts else 0
    return 64 if top <= 2048 else 256


WHAT_IF_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def what_if_rows(score_bins: dict[str, dict[int, int]], bins: int = 20) -> list[dict[str, Any]]:
    """Per score: how many scored pairs a filter at each threshold would remove (score >= t)."""
    rows = []
    for key, counts in sorted(score_bins.items()):
        total = sum(counts.values())
        at = [sum(n for b, n in counts.items() if b >= round(t * bins)) for t in WHAT_IF_THRESHOLDS]
        rows.append({"score": key, "scored": total, "at_or_above": [(n, n / total if total else 0.0) for n in at]})
    return rows


def render_report(stats: dict[str, Any], sample: dict[str, Any], settings: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (resources.files("recaption.report") / name).read_text(encoding="utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    budget = next((args.get("max_tokens", 77) for s in settings["recipe"]["stages"] for name, args in s.items() if name == "token_budget"), 77)
    charts = {
        "tokens_before": svg_histogram(sample["tokens_before"], 4, "CLIP tokens, cleaned alt-text", marker=budget),
        "tokens_after": svg_histogram(sample["tokens_after"], 4, "CLIP tokens, selected caption", marker=budget, color="#59a14f"),
        "widths": svg_histogram(sample["widths"], _size_width(sample["widths"]), "image width (px)", color="#9c755f"),
        "heights": svg_histogram(sample["heights"], _size_width(sample["heights"]), "image height (px)", color="#9c755f"),
    }
    n_in = stats["input"] or 1
    reasons = [
        {"key": key, "n": n, "share": n / n_in, "examples": sample["examples"].get(key, [])}
        for key, n in sorted(stats["rejects_by_reason"].items(), key=lambda kv: -kv[1])
    ]
    return env.get_template("report.html.j2").render(
        stats=stats,
        settings=settings,
        reasons=reasons,
        charts=charts,
        rules=sorted(sample["rules"].items(), key=lambda kv: -kv[1]),
        what_if=what_if_rows(sample.get("score_bins", {})),
        thresholds=WHAT_IF_THRESHOLDS,
        gallery=sample["gallery"],
    )


def write_report(path: Path, stats: dict[str, Any], sample: dict[str, Any], settings: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(stats, sample, settings), encoding="utf-8")
