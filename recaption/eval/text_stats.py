"""Reference-free text statistics of one caption source over a dataset.

- length in words and in CLIP tokens (start and end tokens included; 77 is CLIP's budget);
- diversity: distinct-1 and distinct-2 (distinct n-grams over all n-grams of the source) and
  self-BLEU-4 (each caption of a sample scored against the rest of the sample as references;
  lower is more diverse);
- boilerplate rate: captions that say "the image shows", "this picture depicts", "we can see";
- sensitive-attribute rate: captions in which the guideline's checker finds something to
  remove (race, health, religion, ... and, with a names model, people's names).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from typing import Any

import numpy as np

from recaption.eval.captioning import tokenize

BOILERPLATE = re.compile(
    r"(?i)\b(?:the|this)\s+(?:image|picture|photo|photograph|scene)\s+(?:shows|depicts|features|displays|captures|contains|presents|is\s+of)\b"
    r"|\bwe\s+can\s+see\b|\bin\s+(?:the|this)\s+(?:image|picture)\s*,"
)
SELF_BLEU_SAMPLE = 500


def distinct_n(token_lists: list[list[str]], n: int) -> float:
    grams: Counter = Counter()
    for tokens in token_lists:
        grams.update(zip(*(tokens[i:] for i in range(n))))
    total = sum(grams.values())
    return 100 * len(grams) / total if total else float("nan")


def self_bleu(texts: list[str], sample: int = SELF_BLEU_SAMPLE, seed: int = 0) -> float:
    """Mean BLEU-4 of each caption against the others (a seeded sample of ``sample``)."""
    from pycocoevalcap.bleu.bleu import Bleu  # noqa: PLC0415

    pool = [t for t in texts if t.strip()]
    if len(pool) < 2:
        return float("nan")
    if len(pool) > sample:
        pool = [pool[i] for i in np.random.default_rng(seed).choice(len(pool), sample, replace=False)]
    res = {i: [t] for i, t in enumerate(pool)}
    gts = {i: pool[:i] + pool[i + 1 :] for i in range(len(pool))}
    with contextlib.redirect_stdout(io.StringIO()):
        score, _ = Bleu(4).compute_score(gts, res)
    return 100 * float(score[3])


def text_stats(texts: list[str], count_clip_tokens: Any, sensitive: Any = None, entities: Any = None) -> dict[str, float]:
    """``count_clip_tokens``: text -> CLIP token count; ``sensitive``: a
    ``SensitiveAttributeFilter``; ``entities``: an ``EntityFinder`` for names (optional)."""
    tokens = [tokenize(t).split() for t in texts]
    out = {
        "words": float(np.mean([len(t) for t in tokens])) if tokens else float("nan"),
        "clip_tokens": float(np.mean([count_clip_tokens(t) for t in texts])) if texts else float("nan"),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "self_bleu": self_bleu([" ".join(t) for t in tokens]),
        "boilerplate": 100 * float(np.mean([bool(BOILERPLATE.search(t)) for t in texts])) if texts else float("nan"),
    }
    if sensitive is not None and texts:
        found = entities.find(texts) if entities is not None else [()] * len(texts)
        out["sensitive"] = 100 * float(np.mean([bool(sensitive.check(t, e).removed) for t, e in zip(texts, found)]))
    return out
