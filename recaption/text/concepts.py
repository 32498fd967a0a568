"""What an ImageNet classifier's probabilities say, read through WordNet's hierarchy.

ImageNet-1k's classes are leaves of WordNet, and a classifier unsure between a German
Shepherd (0.34), a Standard Schnauzer (0.12) and a Malamute (0.07) is sure of a dog. The
mass of a concept is the summed probability of the classes under it
(``data/imagenet_hierarchy.json``, built by ``scripts/build_imagenet_hierarchy.py`` from
WordNet 3.0, which names only the concepts a caption may say). A ``Claim`` states the most
specific concept whose mass is confident and hedges one more specific class under it:
"a dog, possibly a German Shepherd". A fine-grained class (a breed, a species, a car model:
a class under a ``kind`` concept) is stated on its own only when it is near certain
(``SURE_CLASS``): below that, the kind is what is sure, and the class is the hedge ("a cat,
possibly an Egyptian Mau"). Under a ``general`` concept ("animal", "hoofed mammal")
nothing is hedged: a giraffe, which ImageNet lacks, spreads its mass over zebra, ox and impala,
and "possibly a zebra" would be wrong. With nothing confident, a class or concept is only
hedged where it holds most of the mass of the concept above it, and no concept is hedged for
the sum of classes that are each unlikely: mass spread over several classes says less.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HIERARCHY = Path(__file__).parent / "data" / "imagenet_hierarchy.json"
SURE_CLASS = 0.9  # a class under a basic concept is stated plainly only at this probability
CONCENTRATED = 0.5  # unconfident: hedge only what holds at least this share of its parent concept's mass


@dataclass(frozen=True)
class Concept:
    name: str  # "dog", or a class's readable name "German Shepherd Dog"
    p: float  # summed probability of the classes under it
    level: str  # "class", "kind", "basic" or "general"
    classes: frozenset[int]


@dataclass(frozen=True)
class Claim:
    stated: Concept | None  # said plainly
    hedged: Concept | None  # "possibly ..."

    @property
    def covers(self) -> frozenset[int]:
        """The classes this claim speaks for: no later claim repeats them."""
        return (self.stated or self.hedged).classes  # type: ignore[union-attr]


@dataclass(frozen=True)
class Node:
    name: str
    level: str
    classes: frozenset[int]


@lru_cache(maxsize=1)
def hierarchy() -> tuple[Node, ...]:
    """The nameable WordNet concepts above ImageNet's classes, most specific first."""
    data = json.loads(HIERARCHY.read_text(encoding="utf-8"))
    return tuple(Node(n["name"], n["level"], frozenset(n["classes"])) for n in data["nodes"].values())


def concepts(probs: Mapping[int, float], names: Mapping[int, str]) -> list[Concept]:
    """Every class in ``probs`` and every nameable concept above one of them, with its mass."""
    out = [Concept(names[i], p, "class", frozenset({i})) for i, p in probs.items()]
    for node in hierarchy():
        present = node.classes & probs.keys()
        if present:
            out.append(Concept(node.name, round(sum(probs[i] for i in present), 4), node.level, node.classes))
    return out


def _parent(concept: Concept, among: list[Concept]) -> Concept | None:
    """The smallest concept strictly above ``concept``."""
    above = [c for c in among if c.classes > concept.classes]
    return min(above, key=lambda c: len(c.classes)) if above else None


def claims(
    probs: Mapping[int, float],
    names: Mapping[int, str],
    confident: float = 0.6,
    hedge_min: float = 0.3,
    limit: int = 2,
) -> list[Claim]:
    """Up to ``limit`` claims, each about classes no earlier claim covers."""
    found: list[Claim] = []
    covered: set[int] = set()
    everything = concepts(probs, names)
    while len(found) < limit:
        pool = [c for c in everything if not (c.classes & covered)]
        claim = _one_claim(pool, confident, hedge_min)
        if claim is None:
            break
        found.append(claim)
        covered |= claim.covers
    return found


def _most_specific(candidates: list[Concept]) -> Concept | None:
    # A class before a concept that holds only it ("espresso" before "coffee").
    return min(candidates, key=lambda c: (len(c.classes), c.level != "class", -c.p, c.name)) if candidates else None


def _one_claim(pool: list[Concept], confident: float, hedge_min: float) -> Claim | None:
    sure = _most_specific([c for c in pool if c.p >= confident])
    if sure is not None and sure.level == "class" and sure.p < SURE_CLASS:
        kind = _most_specific([c for c in pool if c.classes > sure.classes and c.level == "kind"])
        sure = kind or sure
    if sure is not None:
        hedged = None
        if sure.level in ("basic", "kind"):  # "a dog, possibly a German Shepherd"
            below = [c for c in pool if c.classes < sure.classes and c.p >= hedge_min]
            hedged = _most_specific(below)
        elif sure.level == "general":  # "an animal, possibly a dog": only a basic concept, never a class
            below = [c for c in pool if c.classes < sure.classes and c.p >= hedge_min and c.level in ("basic", "kind")]
            hedged = _most_specific(below)
        return Claim(sure, hedged)
    for maybe in sorted((c for c in pool if c.p >= hedge_min and c.level == "class"), key=lambda c: -c.p):
        parent = _parent(maybe, pool)
        if parent is None or maybe.p >= CONCENTRATED * parent.p:
            # Where the parent is itself unsure, the mass is spread: the parent is not claimed either.
            return Claim(None, maybe)
    return None
