"""Reference-free text statistics of one caption source over a dataset.

- length in words and in CLIP tokens (start and end tokens included; 77 is CLIP's budget);
- diversity: distinct-1 and distinct-2 (distinct n-grams over all n-grams of the source) and
  self-BLEU-4 (each caption of a sample of 1,000 scored against the rest of the sample as
  references; lower is more diverse);
- boilerplate rate: captions that say "the image shows", "this picture depicts", "we can see";
- sensitive-attribute rate: captions in which the guideline's checker finds something to
  remove (race, health, religion, ... and, with a names model, people's names).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import numpy as np

from recaption.eval.reference_metrics import tokenize

BOILERPLATE = re.compile(
    r"(?i)\b(?:the|this)\s+(?:image|picture|photo|photograph|scene)\s+(?:shows|depicts|features|displays|captures|contains|presents|is\s+of)\b"
    r"|\bwe\s+can\s+see\b|\bin\s+(?:the|this)\s+(?:image|picture)\s*,"
)
SELF_BLEU_SAMPLE = 1000


def distinct_n(token_lists: list[list[str]], n: int) -> float:
    grams: Counter = Counter()
    for tokens in token_lists:
        grams.update(zip(*(tokens[i:] for i in range(n))))
    total = sum(grams.values())
    return 100 * len(grams) / total if total else float("nan")


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def self_bleu(texts: list[str], sample: int = SELF_BLEU_SAMPLE, seed: int = 0) -> float:
    """Corpus BLEU-4 of each caption of a seeded sample against all the others, computed as
    pycocoevalcap's ``Bleu(4)`` does (clipped n-gram counts, the closest reference length for
    the brevity penalty), in one pass: for each n-gram only the two highest counts in the
    sample are kept, since the best other reference is the top one unless that is the caption
    itself."""
    pool = [t.split() for t in texts if t.strip()]
    if len(pool) < 2:
        return float("nan")
    if len(pool) > sample:
        pool = [pool[i] for i in np.random.default_rng(seed).choice(len(pool), sample, replace=False)]
    counts = [[_ngrams(tokens, n) for n in range(1, 5)] for tokens in pool]
    top: list[dict[tuple[str, ...], tuple[int, int, int]]] = [{} for _ in range(4)]  # gram -> (best, holder, second)
    for i, per_n in enumerate(counts):
        for n in range(4):
            for gram, c in per_n[n].items():
                best, holder, second = top[n].get(gram, (0, -1, 0))
                top[n][gram] = (c, i, best) if c > best else (best, holder, max(second, c))
    lengths = sorted((len(t), i) for i, t in enumerate(pool))
    correct, guess, test_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for i, tokens in enumerate(pool):
        for n in range(4):
            for gram, c in counts[i][n].items():
                best, holder, second = top[n][gram]
                correct[n] += min(c, second if holder == i else best)
            guess[n] += max(len(tokens) - n, 0)
        others = [length for length, j in lengths if j != i]
        test_len += len(tokens)
        ref_len += min(others, key=lambda r: (abs(r - len(tokens)), r))
    bleu = 1.0
    for n in range(4):
        bleu *= (correct[n] + 1e-15) / (guess[n] + 1e-9)
    score = bleu ** 0.25
    ratio = (test_len + 1e-15) / (ref_len + 1e-9)
    return 100 * (score * math.exp(1 - 1 / ratio) if ratio < 1 else score)


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
