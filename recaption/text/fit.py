"""Shorten a caption to a token budget without cutting words.

The text is split into sentences, sentences into clauses. The first sentence is always
kept (it usually names the subject); then the remaining units with the most concrete
content (capitalised names, numbers) are added, in their original order, while they fit.
Only when the first sentence alone is too long is it cut, at a clause and then at a word
boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_CLAUSE_END = re.compile(r"(?<=[,:])\s+|\s+(?=[-–—]\s)|\s+(?=\()")
_CONCRETE = re.compile(r"\b(?:[A-Z][\w'-]+|\d[\w.,]*)")


def _concreteness(unit: str) -> int:
    # The first word of a unit is capitalised anyway; do not count it as a name.
    return len(_CONCRETE.findall(unit[1:] if unit else unit))


def _cut_words(text: str, fits: Callable[[str], bool]) -> str:
    words = text.split()
    lo, hi = 0, len(words)  # binary search on the number of words kept
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(" ".join(words[:mid])):
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def _split(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [u for u in (p.strip() for p in pattern.split(text)) if u]


def fit_to_budget(text: str, count: Callable[[str], int], budget: int) -> str:
    """Return ``text`` or a shortened version of it with ``count(result) <= budget``."""

    def fits(candidate: str) -> bool:
        return count(candidate) <= budget

    if fits(text):
        return text
    sentences = _split(text, _SENTENCE_END)
    head = sentences[0]
    if not fits(head):
        clauses = _split(head, _CLAUSE_END)
        kept = clauses[0] if fits(clauses[0]) else _cut_words(clauses[0], fits)
        for clause in clauses[1:]:
            if fits(f"{kept} {clause}"):
                kept = f"{kept} {clause}"
            else:
                break
        return kept.rstrip(",:;-–— ")
    rest = sentences[1:]
    # Greedy by concreteness, ties by position; then restore the original order.
    order = sorted(range(len(rest)), key=lambda i: (-_concreteness(rest[i]), i))
    chosen: set[int] = set()
    for i in order:
        candidate = " ".join([head] + [rest[j] for j in sorted(chosen | {i})])
        if fits(candidate):
            chosen.add(i)
    return " ".join([head] + [rest[j] for j in sorted(chosen)])


def chunk_to_budget(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    """Split ``text`` into consecutive chunks that each fit ``budget``: whole sentences packed
    together where they fit, an over-long sentence cut at word boundaries. Nothing is dropped
    (a single word over the budget is a chunk of its own)."""
    if count(text) <= budget:
        return [text]
    units: list[str] = []
    for sentence in _split(text, _SENTENCE_END):
        words = sentence.split()
        while words:
            piece = _cut_words(" ".join(words), lambda c: count(c) <= budget) or words[0]
            units.append(piece)
            words = words[len(piece.split()) :]
    chunks = [units[0]]
    for unit in units[1:]:
        joined = f"{chunks[-1]} {unit}"
        if count(joined) <= budget:
            chunks[-1] = joined
        else:
            chunks.append(unit)
    return chunks
