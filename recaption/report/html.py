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
import yaml
from markupsafe import Markup, escape

from recaption.io.atomic import atomic_path


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


PERCENTILES = (5, 50, 95)


def percentiles(counts: dict[int, int], qs: tuple[int, ...] = PERCENTILES) -> dict[int, int]:
    """Nearest-rank percentiles of a histogram of integer values (value -> count)."""
    total = sum(counts.values())
    out: dict[int, int] = {}
    if not total:
        return out
    cum = 0
    for value, n in sorted(counts.items()):
        cum += n
        for q in qs:
            if q not in out and cum >= math.ceil(q / 100 * total):
                out[q] = int(value)
    return out


def _tick_step(peak: int, most: int = 4) -> int:
    """A round step (1, 2 or 5 times a power of ten) that puts at most ``most`` ticks above 0."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if peak / (step * m) <= most:
                return step * m
        step *= 10


def svg_histogram(series: list[tuple[str, dict[int, int], str]], bin_width: int, label: str, marker: int | None = None) -> Markup:
    """A histogram with axes: counts on the y axis (ticks and grid), values on the x axis, each
    bar's range and count on hover; several series (name, value -> count, colour) side by side
    in each bin, each with its p50 drawn and its n, p5 / p50 / p95 in the legend; ``marker``
    (e.g. the token budget) as a red line."""
    union: dict[int, int] = {}
    for _, counts, _ in series:
        for value in counts:
            union[value] = 1
    if marker is not None:
        union[marker] = 1
    edges = _bins(union, bin_width)
    if not edges or not any(counts for _, counts, _ in series):
        return Markup('<p class="muted">no data</p>')
    per_series = [dict(_bins({**{e: 0 for e, _ in edges}, **counts}, bin_width)) for _, counts, _ in series]
    w, h, left, right, top = 560, 170, 46, 12, 10
    peak = max(max(b.values()) for b in per_series) or 1
    step = _tick_step(peak)
    y_top = max(peak, step * math.ceil(peak / step))
    plot_w = w - left - right
    bin_px = plot_w / len(edges)

    def x_of(value: float) -> float:
        return left + (value / bin_width) * bin_px

    def y_of(count: float) -> float:
        return h - (h - top) * count / y_top

    legend_h = 16 * len(series)
    parts = [f'<svg viewBox="0 0 {w} {h + 44 + legend_h}" class="chart" role="img" aria-label="{escape(label)}">']
    parts.append('<g class="y-axis">')
    for t in range(0, y_top + 1, step):
        y = y_of(t)
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 5}" y="{y + 3:.1f}" class="tick" text-anchor="end">{t}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h}" class="axis-line"/>'
                 f'<text x="10" y="{(top + h) / 2:.0f}" class="axis" transform="rotate(-90 10 {(top + h) / 2:.0f})" text-anchor="middle">pairs</text></g>')
    sub_w = bin_px / len(series)
    for k, ((name, _, color), bins) in enumerate(zip(series, per_series)):
        for i, (lo, _) in enumerate(edges):
            n = bins.get(lo, 0)
            if not n:
                continue
            x = left + i * bin_px + k * sub_w
            parts.append(f'<rect x="{x:.1f}" y="{y_of(n):.1f}" width="{max(sub_w - 1, 1):.1f}" height="{h - y_of(n):.1f}" fill="{color}">'
                         f"<title>{escape(name)}: {lo}–{lo + bin_width - 1}: {n} pairs</title></rect>")
    parts.append(f'<g class="x-axis"><line x1="{left}" x2="{w - right}" y1="{h}" y2="{h}" class="axis-line"/>')
    every = max(1, math.ceil(len(edges) / 10))
    for i in range(0, len(edges), every):
        x = left + i * bin_px
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{h}" y2="{h + 4}" class="axis-line"/><text x="{x:.1f}" y="{h + 15}" class="tick" text-anchor="middle">{edges[i][0]}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{h + 31}" class="axis" text-anchor="middle">{escape(label)}</text></g>')
    if marker is not None:
        mx = x_of(marker)
        parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{h}" class="marker"/><text x="{mx + 3:.1f}" y="{top + 10}" class="tick marker-label">{marker}</text>')
    for k, (name, counts, color) in enumerate(series):
        q = percentiles(counts)
        y = h + 52 + 16 * k
        if q:
            px = x_of(q[50])
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{h}" stroke="{color}" class="median"><title>{escape(name)}: median {q[50]}</title></line>')
        stats = f"n {sum(counts.values())} · p5 {q.get(5, '–')} · p50 {q.get(50, '–')} · p95 {q.get(95, '–')}"
        parts.append(f'<g class="legend"><rect x="{left}" y="{y - 9}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{left + 15}" y="{y}" class="tick">{escape(name)}: {stats}</text></g>')
    parts.append("</svg>")
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
        "tokens": svg_histogram([("cleaned alt-text", sample["tokens_before"], "#f28e2b"), ("selected caption", sample["tokens_after"], "#4c78a8")],
                                4, f"CLIP tokens (red line: the budget, {budget})", marker=budget),
        "widths": svg_histogram([("width", sample["widths"], "#9c755f")], _size_width(sample["widths"]), "image width (px)"),
        "heights": svg_histogram([("height", sample["heights"], "#9c755f")], _size_width(sample["heights"]), "image height (px)"),
    }
    n_in = stats["input"] or 1
    reasons = [
        {"key": key, "n": n, "share": n / n_in, "examples": sample["examples"].get(key, [])}
        for key, n in sorted(stats["rejects_by_reason"].items(), key=lambda kv: -kv[1])
    ]
    gallery = gallery_items(sample)
    quality = quality_rows(sample.get("quality", {}), sample["tokens_after"], budget, stats)
    lines = recipe_lines(settings["recipe"])
    return env.get_template("report.html.j2").render(
        stats=stats,
        settings=settings,
        reasons=reasons,
        charts=charts,
        rules=sorted(sample["rules"].items(), key=lambda kv: -kv[1]),
        what_if=what_if_rows(sample.get("score_bins", {})),
        thresholds=WHAT_IF_THRESHOLDS,
        gallery=gallery,
        gallery_reasons=sorted({g["status"] for g in gallery} - {"kept"}),
        gallery_sources=sorted({g["source"] for g in gallery if g["source"]}),
        gallery_scores=sorted({k for g in gallery for k in g["scores"]}),
        recipe_lines=lines,
        quality=quality,
        clusters=[(label, sorted(members, key=lambda m: m.get("role") != "kept")) for label, members in sorted(sample.get("groups", {}).items())],
        recipe_overridden=any(o for _, o in lines),
    )


def quality_rows(quality: dict[str, int], tokens_after: dict[int, int], budget: int, stats: dict[str, Any]) -> list[tuple[str, int, float | None]]:
    """(what, pairs, share of kept pairs) for the caption figures a run gives without references;
    sensitive_check's removals count captions (every candidate), so they have no share."""
    kept = quality.get("pairs", 0)
    if not kept:
        return []
    sensitive = (stats["stages"].get("sensitive_check") or {}).get("metrics") or {}
    rows = [("training caption differs from the original alt-text", quality.get("changed", 0))]
    rows += [(f"training caption written by {k.split(':', 1)[1]}", n) for k, n in sorted(quality.items()) if k.startswith("source:")]
    rows += [
        ("no training caption selected", quality.get("no_caption", 0)),
        ("a label hedged (\"possibly ...\")", quality.get("hedged", 0)),
        ("fitted to the token budget", quality.get("fitted", 0)),
        (f"over the token budget ({budget} CLIP tokens)", sum(n for t, n in tokens_after.items() if int(t) > budget)),
        ("content-free (says nothing of the image)", quality.get("content_free", 0)),
    ]
    shares: list[tuple[str, int, float | None]] = [(what, n, n / kept) for what, n in rows]
    return shares + [(f"{k.replace('_', ' ')} (sensitive_check, in any candidate caption)", int(v), None)
                     for k, v in sorted(sensitive.items()) if k.startswith("removed_")]


def gallery_items(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """The gallery's cards: the kept sample, then every reject example, each with its status
    (``kept`` or the reject key) and the text the search looks in."""
    items = [{**g, "status": "kept", "detail": ""} for g in sample["gallery"]]
    items += [{**ex, "status": key} for key, examples in sorted(sample["examples"].items()) for ex in examples]
    for g in items:
        g.setdefault("scores", {})
        g.setdefault("source", "")
        g["search"] = " ".join([g["image_id"], *g.get("texts", []), g.get("caption", ""), *g.get("ocr", []), *g.get("tags", []), g.get("detail", "")])
    return items


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump({"v": value}, default_flow_style=True, width=10**6, allow_unicode=True).strip()
    return text[len("{v: "): -1]


def recipe_lines(recipe: dict[str, Any]) -> list[tuple[str, bool]]:
    """The recipe as YAML lines (as a user writes it, not JSON), each with whether ``--set``
    changed it."""
    overridden = set(recipe.get("overridden") or [])
    lines: list[tuple[str, bool]] = [(f"name: {_yaml_value(recipe['name'])}", False), ("stages:", False)]
    for stage in recipe["stages"]:
        (name, args), = stage.items()
        lines.append((f"  - {name}:" if args else f"  - {name}", False))
        lines += [(f"      {key}: {_yaml_value(value)}", f"{name}.{key}" in overridden) for key, value in args.items()]
    if recipe.get("report"):
        lines.append(("report:", False))
        lines += [(f"  {k}: {_yaml_value(v)}", False) for k, v in recipe["report"].items()]
    return lines


def write_report(path: Path, stats: dict[str, Any], sample: dict[str, Any], settings: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(stats, sample, settings), encoding="utf-8")
