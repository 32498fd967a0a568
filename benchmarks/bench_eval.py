"""All of `recaption eval`'s text metrics for 10,000 caption pairs on two cores.

Pairs of web-like alt-texts, a captioner's captions and two reference captions each, made
from a fixed vocabulary (so n-gram statistics behave like real captions'), evaluated without
a CLIP model: text statistics, fluency, BLEU-1..4 / METEOR / ROUGE-L / CIDEr (after PTB
tokenisation), noun phrases and alt-text retention. Target: the whole table in under 2
minutes. Prints each metric family's share of the time.

    .venv/bin/python -m benchmarks.bench_eval [--n 10000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.harness import VOCABULARY, machine
from recaption.eval.evaluate import EvalSettings, evaluate
from recaption.record import Caption, Pair

NOUNS = VOCABULARY[16:48]
ADJECTIVES = VOCABULARY[:16]


def phrase(rng: np.random.Generator) -> str:
    return f"{rng.choice(['a', 'the', 'two', 'three'])} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


def caption_pairs(n: int, seed: int = 0) -> list[Pair]:
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        a, b, c = phrase(rng), phrase(rng), phrase(rng)
        place = f"{rng.choice(['on', 'near', 'beside', 'behind'])} {phrase(rng)}"
        pair = Pair(f"p{i}", None, texts=[f"IMG_{i:05d}.jpg {a} {rng.choice(['photo', 'stock image', '4k wallpaper'])}"])
        pair.captions = [
            Caption(pair.texts[0], "alt-text", selected=True),
            Caption(f"a photo of {a} {place} with {b}", "vlm:bench", round=1, parent=0),
        ]
        pair.meta["references"] = [f"a photo of {a} {place}", f"{a} and {c} {place}"]
        pairs.append(pair)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    pairs = caption_pairs(args.n)
    print(f"machine: {machine()}; {args.n} pairs, 2 caption sources (alt-text, one captioner), 2 references each")
    start = time.perf_counter()
    result = evaluate(pairs, EvalSettings(names=True, progress=False))
    total = time.perf_counter() - start
    print(f"whole table: {total:.1f} s ({2 * args.n / total:.0f} captions/s); target < 120 s")
    for name, seconds in sorted(result.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<32} {seconds:6.1f} s  {100 * seconds / total:5.1f} %")
    if result.missing:
        print("  not measured: " + "; ".join(f"{k}: {v}" for k, v in result.missing.items()))


if __name__ == "__main__":
    main()
