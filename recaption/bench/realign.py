"""``recaption bench realign OUTPUT``: the Altogether paper's Table 1, reproduced offline.

1. Build the synthetic world (``recaption.bench.world``): training and held-out test images,
   alt-texts, reference captions.
2. Train the world's CLIP contrastively and freeze it; make a random decoder with the world's
   tokenizer (``recaption.bench.world_models``).
3. Train the captioner with ``recaption train captioner``'s own loop on the training images'
   ``{image, alt_text, caption}`` records (alt-text dropped half the time, as in the paper).
4. Caption the test images with the ``altogether_caption`` stage: without alt-text, with a
   random test image's alt-text, and with the right one; score every caption source with the
   ``clip_score`` stage (the world's CLIP) and against the references.

The table (``table.json``, ``table.md``) has one row per source and the paper's columns, with
deltas against the alt-text row, plus what only this world can measure: the share of captions
that keep the alt-text's name, that drop its wrong claim, and that state the image's facts.
Seeds are fixed; the test images are never trained on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recaption.bench.world import Scene, build_world, describe, world_texts
from recaption.bench.world_models import train_world_clip, world_decoder
from recaption.eval.reference_metrics import ReferenceMetrics, load_noun_chunker, noun_phrase_scores
from recaption.models.altogether import AltogetherConfig
from recaption.record import Caption, Pair
from recaption.stages.caption import AltogetherCaption
from recaption.stages.scoring import ClipScore
from recaption.train.config import TrainConfig
from recaption.train.loop import train_captioner

ROWS = ("alt-text", "captioner without alt-text", "captioner with random alt-text", "captioner with alt-text")
COLUMNS = {
    "clip_score": "CLIPScore", "bleu1": "BLEU-1", "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr",
    "np_f1": "NP F1", "np_precision": "NP P", "np_recall": "NP R",
    "name_kept": "name kept %", "wrong_claim_dropped": "wrong claim dropped %", "facts_right": "facts right %",
}


@dataclass
class RealignSettings:
    n_train: int = 2000
    n_test: int = 200
    clip_steps: int = 800
    steps: int = 1500
    batch_size: int = 64
    seed: int = 0
    progress: bool = True
    # Torch's CPU kernels split sums across threads, so results differ in the last bits with
    # the thread count, and training amplifies that: the same seed and threads give the same
    # table (tested), another thread count a slightly different one.
    threads: int = 2


def captions_of(stage_args: dict[str, Any], test: list[Scene], world: Path, alt_texts: list[str]) -> list[str]:
    pairs = [Pair(s.image_id, str(world / "images" / f"{s.image_id}.png"), texts=[alt], captions=[Caption(alt, "alt-text", selected=True)]) for s, alt in zip(test, alt_texts)]
    stage = AltogetherCaption(**stage_args)
    stage(pairs)
    return [next((c.text for c in p.captions if c.source.startswith("altogether:")), "") for p in pairs]


def clip_scores(clip: Path, test: list[Scene], world: Path, texts: list[str], cache: Path) -> float:
    pairs = [Pair(s.image_id, str(world / "images" / f"{s.image_id}.png"), captions=[Caption(t, "candidate")]) for s, t in zip(test, texts)]
    stage = ClipScore(model=str(clip), cache=str(cache))
    for start in range(0, len(pairs), 64):
        stage(pairs[start : start + 64])
    return float(np.mean([p.captions[0].scores.get("clip_score", 0.0) for p in pairs]))


def world_scores(test: list[Scene], texts: list[str]) -> dict[str, float]:
    lower = [t.lower() for t in texts]
    wrong = [(s, t) for s, t in zip(test, lower) if s.wrong_colour]
    facts = [describe(s.count, s.colour, s.shape, s.position) in t for s, t in zip(test, lower)]
    return {
        "name_kept": 100 * float(np.mean([s.name.lower() in t for s, t in zip(test, lower)])),
        "wrong_claim_dropped": 100 * float(np.mean([s.wrong_colour not in t.split() for s, t in wrong])) if wrong else float("nan"),
        "facts_right": 100 * float(np.mean(facts)),
    }


def ordering_checks(table: dict[str, dict[str, float]]) -> dict[str, bool]:
    """The paper's ordering, as checks: re-aligning beats the alt-text and captioning from the
    image alone on the reference metrics and keeps the names; a random alt-text is no help."""
    alt, none, rand, right = (table[r] for r in ROWS)
    refs = [k for k in ("bleu1", "meteor", "rouge_l", "cider", "np_f1") if k in right]
    return {
        "with alt-text best on reference metrics": all(right[k] >= max(alt[k], none[k], rand[k]) for k in refs),
        "with alt-text keeps names": right["name_kept"] > max(none["name_kept"], rand["name_kept"]),
        "with alt-text beats the alt-text on CLIPScore": right["clip_score"] > alt["clip_score"],
        # "no better" within sampling noise: 2 % of the value, or half a point
        "random alt-text no better than none": all(rand[k] <= max(none[k] * 1.02, none[k] + 0.5) for k in refs),
        "wrong claims dropped": right["wrong_claim_dropped"] > alt["wrong_claim_dropped"],
    }


def write_table(output: Path, table: dict[str, dict[str, float]], checks: dict[str, bool], meta: dict[str, Any], examples: list[dict[str, str]]) -> None:
    (output / "table.json").write_text(json.dumps({"rows": table, "checks": checks, **meta}, indent=2) + "\n")
    cols = [k for k in COLUMNS if any(k in row for row in table.values())]
    lines = ["| source | " + " | ".join(COLUMNS[c] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    base = table["alt-text"]
    for row in ROWS:
        cells = []
        for c in cols:
            value = table[row].get(c, float("nan"))
            delta = "" if row == "alt-text" or np.isnan(value) or np.isnan(base.get(c, float("nan"))) else f" ({value - base[c]:+.1f})"
            cells.append("—" if np.isnan(value) else f"{value:.1f}{delta}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "Checks (the paper's ordering):", ""] + [f"- {'yes' if ok else 'NO'}: {name}" for name, ok in checks.items()]
    lines += ["", f"World: {meta['settings']['n_train']} training and {meta['settings']['n_test']} held-out test images; seed {meta['settings']['seed']}; {meta['seconds']:.0f} s.", ""]
    lines += ["Examples (held-out images):", ""]
    for ex in examples:
        lines += [f"- `{ex['image_id']}`: alt-text \"{ex['alt-text']}\"; reference \"{ex['reference']}\""] + [
            f"  - {row}: \"{ex[row]}\"" for row in ROWS[1:]
        ]
    (output / "table.md").write_text("\n".join(lines) + "\n")


def run_realign(output: Path, settings: RealignSettings) -> dict[str, Any]:
    """Build the world, train its models and the captioner, write the table; deterministic for
    a seed and a thread count (``settings.threads`` torch threads, whatever the machine has)."""
    import torch  # noqa: PLC0415 - torch, loaded only where it is used

    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run_realign(output, settings)
    finally:
        torch.set_num_threads(threads_before)


def _run_realign(output: Path, settings: RealignSettings) -> dict[str, Any]:
    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    world, models, cache = output / "world", output / "models", output / "cache"
    splits = build_world(world, settings.n_train, settings.n_test, settings.seed)
    train, test = splits["train"], splits["test"]
    clip = train_world_clip(models / "clip", [world / "images" / f"{s.image_id}.png" for s in train], [s.reference for s in train], settings.clip_steps, settings.seed, settings.progress)
    decoder = world_decoder(models / "decoder", world_texts(train), settings.seed)
    model = AltogetherConfig(encoder=str(clip), decoder=str(decoder), visual_tokens=10, mapper_layers=2, mapper_heads=4, max_alt_tokens=32, max_caption_tokens=32)
    config = TrainConfig(
        name="realign", data=str(world / "train.jsonl"), kind="finetune", output=str(output / "captioner"), model=model,
        steps=settings.steps, batch_size=settings.batch_size, warmup=max(1, settings.steps // 20), save_every=max(1, settings.steps // 3),
        log_every=25, seed=settings.seed, cache=str(cache),
    )
    checkpoint = train_captioner(config, progress=settings.progress)

    # Captions of the held-out images: the names check is off, since the made-up set names are
    # exactly the concrete proper names a re-aligned caption should keep.
    stage = {"checkpoint": str(checkpoint), "names": False, "cache": str(cache), "seed": settings.seed, "batch_size": 64}
    order = np.random.default_rng(settings.seed + 1).permutation(len(test))
    shuffled = [""] * len(test)
    for j, i in enumerate(order):  # a cycle through a random order: every image gets another image's alt-text
        shuffled[i] = test[order[(j + 1) % len(test)]].alt_text
    texts = {
        "alt-text": [s.alt_text for s in test],
        "captioner without alt-text": captions_of({**stage, "alt_text": False}, test, world, [s.alt_text for s in test]),
        "captioner with random alt-text": captions_of(stage, test, world, shuffled),
        "captioner with alt-text": captions_of(stage, test, world, [s.alt_text for s in test]),
    }
    references = {s.image_id: [s.reference] for s in test}
    candidates = {row: {s.image_id: t for s, t in zip(test, texts[row])} for row in ROWS}
    metrics, nlp = ReferenceMetrics(), load_noun_chunker()
    try:
        by_reference = metrics.score_sources(candidates, references)
    finally:
        metrics.close()
    table: dict[str, dict[str, float]] = {}
    for row in ROWS:
        table[row] = {
            "clip_score": clip_scores(clip, test, world, texts[row], cache),
            **{k: v for k, v in by_reference.get(row, {}).items() if k in COLUMNS},
            **noun_phrase_scores(candidates[row], references, nlp),
            **world_scores(test, texts[row]),
        }
    checks = ordering_checks(table)
    examples = [{"image_id": s.image_id, "reference": s.reference, **{row: texts[row][i] for row in ROWS}} for i, s in enumerate(test[:6])]
    meta = {"settings": settings.__dict__, "seconds": time.perf_counter() - started, "missing": metrics.missing}
    write_table(output, table, checks, meta, examples)
    with open(output / "captions.jsonl", "w", encoding="utf-8") as fh:
        for i, s in enumerate(test):
            fh.write(json.dumps({"image_id": s.image_id, "reference": s.reference, **{row: texts[row][i] for row in ROWS}}) + "\n")
    return {"rows": table, "checks": checks, **meta}
