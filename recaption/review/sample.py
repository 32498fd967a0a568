"""``recaption audit sample``: the pairs a person should look at (strategy C's "audit a random
5-10 % by hand").

- ``uniform``: a seeded random ``rate`` of the pairs;
- ``stratified``: the pairs are cut into ``bands`` equal-count bands of a score (``by``, e.g.
  ``clip_score`` of the selected caption, or any pair score such as ``nsfw``) and ``rate`` of
  each band is drawn, so low, middle and high scores are all seen; pairs without the score
  form a band of their own;
- ``lowest`` N: the N lowest-scoring pairs are always in;
- ``disagreeing`` N: the N pairs whose caption sources disagree most are always in
  (disagreement: one minus the mean word overlap, Jaccard, between the pair's current captions
  of different sources; the alt-text, the rules caption and a VLM's that share no words
  disagree completely).

Every picked pair records why in ``meta.audit`` (``reason``, ``band``, ``seed``); the sample is
a dataset like any other, in the input's format, with ``sample.json`` beside it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recaption.eval.reference_metrics import tokenize
from recaption.eval.sources import current_captions
from recaption.io import default_output_format, open_reader, open_writer, read_kept_pairs
from recaption.io.run_folder import kept_data
from recaption.record import Pair
from recaption.review.images import embed_images, image_roots

MODES = ("uniform", "stratified")


@dataclass
class SampleSettings:
    rate: float = 0.05
    mode: str = "uniform"
    by: str = "clip_score"
    bands: int = 5
    lowest: int = 0
    disagreeing: int = 0
    seed: int = 0

    def check(self) -> None:
        if not 0 < self.rate <= 1:
            raise ValueError("--rate must be in (0, 1]")
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {MODES}")
        if self.bands < 1 or self.lowest < 0 or self.disagreeing < 0:
            raise ValueError("--bands must be at least 1; --lowest and --disagreeing at least 0")


def pair_score(pair: Pair, key: str) -> float | None:
    """A pair-level score, else the selected caption's score of that name."""
    if isinstance(pair.scores.get(key), (int, float)):
        return float(pair.scores[key])
    selected = pair.selected()
    value = selected.scores.get(key) if selected else None
    return float(value) if isinstance(value, (int, float)) else None


def score_names(pairs: list[Pair]) -> list[str]:
    """Every numeric score a pair or its selected caption holds, for --by."""
    names: set[str] = set()
    for pair in pairs:
        names |= {k for k, v in pair.scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        selected = pair.selected()
        if selected is not None:
            names |= {k for k, v in selected.scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names)


def disagreement(pair: Pair) -> float:
    words = [set(tokenize(cap.text).split()) for _, cap in current_captions(pair).values()]
    words = [w for w in words if w]
    if len(words) < 2:
        return 0.0
    overlaps = [len(a & b) / len(a | b) for i, a in enumerate(words) for b in words[i + 1 :]]
    return 1.0 - float(np.mean(overlaps))


def choose(pairs: list[Pair], settings: SampleSettings) -> tuple[list[int], dict[int, dict]]:
    """Indices of the sampled pairs (in input order) and why each was picked."""
    settings.check()
    rng = np.random.default_rng(settings.seed)
    why: dict[int, dict] = {}
    scores = [pair_score(p, settings.by) for p in pairs]
    scored = [i for i, s in enumerate(scores) if s is not None]
    if pairs and not scored and (settings.mode == "stratified" or settings.lowest):
        # Every pair would land in an "unscored" band and --lowest would add nothing: say so.
        raise ValueError(f"no pair has a score named {settings.by!r}; the scores present are: {', '.join(score_names(pairs)) or 'none'}")
    if settings.lowest:
        for i in sorted(scored, key=lambda i: (scores[i], i))[: settings.lowest]:
            why[i] = {"reason": "lowest", "score": scores[i]}
    if settings.disagreeing:
        spread = [disagreement(p) for p in pairs]
        for i in sorted(range(len(pairs)), key=lambda i: (-spread[i], i))[: settings.disagreeing]:
            why.setdefault(i, {"reason": "disagreeing", "disagreement": round(spread[i], 4)})
    if settings.mode == "uniform":
        groups = {"all": list(range(len(pairs)))}
    else:
        order = sorted(scored, key=lambda i: (scores[i], i))
        groups = {f"band {b + 1} of {settings.bands}": list(part) for b, part in enumerate(np.array_split(np.array(order, dtype=int), settings.bands))}
        groups["unscored"] = [i for i, s in enumerate(scores) if s is None]
    for name, members in groups.items():
        if not members:
            continue
        k = min(len(members), max(1, math.ceil(settings.rate * len(members))))
        for i in sorted(rng.choice(np.array(members, dtype=int), size=k, replace=False).tolist()):
            why.setdefault(int(i), {"reason": settings.mode, "band": name} if settings.mode == "stratified" else {"reason": "uniform"})
    for i, reason in why.items():
        reason["seed"] = settings.seed
        if scores[i] is not None:
            reason.setdefault("score", scores[i])
    return sorted(why), why


def write_sample(input_path: str, output: str, settings: SampleSettings, fmt: str | None, options: Any) -> dict:
    """Read INPUT, choose, write ``OUTPUT/part-00000.*`` (the input's format) and ``OUTPUT/sample.json``."""

    pairs, rejected = read_kept_pairs(input_path, fmt, options)
    chosen, why = choose(pairs, settings)
    out = Path(output)
    source = kept_data(input_path)
    writer = open_writer(default_output_format(open_reader(source, fmt, options)), out)
    out.mkdir(parents=True, exist_ok=True)
    picked = []
    for i in chosen:
        pairs[i].meta["audit"] = why[i]
        picked.append(pairs[i])
    roots = image_roots(Path(input_path), options.image_root)
    embed_images(picked, roots)  # the sample holds its images: reviewed from its own folder, handed on whole
    writer.write("part-00000", picked)
    reasons: dict[str, int] = {}
    for i in chosen:
        reasons[why[i]["reason"]] = reasons.get(why[i]["reason"], 0) + 1
    summary = {"input": str(input_path), "pairs": len(pairs), "rejected_records_left_out": rejected, "sampled": len(chosen),
               "by_reason": reasons, "settings": settings.__dict__, "image_ids": [pairs[i].image_id for i in chosen]}
    (out / "sample.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
