"""``select``: keep the best captions of each pair by a stored score (strategy C's re-ranking).

Among a pair's current captions (those no edit has replaced), near-identical ones are
collapsed first, the best-scored of each group standing for it (the homogeneity guard:
five samples that say the same thing are one candidate, not five). The rest are ranked by
``score`` and the top ``k`` selected, except that when the original alt-text ranks among
them nothing ranked below it is kept: the method's goal is a caption that scores higher
than the original, and where none does, the alt-text stays.

Stored: on each ranked caption ``scores.margin_vs_alt`` (its score minus the alt-text's);
on the pair ``scores.select_margin`` (best selected minus alt-text; 0 when the alt-text
won), ``scores.candidate_diversity`` (1 - mean word-set Jaccard between the model's
candidates: 0 when they are all the same) and ``scores.candidates_distinct``.
"""

from __future__ import annotations

import itertools
import re

from recaption.record import Pair
from recaption.stages.base import Stage, StageError, register

_WORD = re.compile(r"\w+")


def word_set(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@register
class Select(Stage):
    name = "select"
    batch_size = 256

    def __init__(self, *, k: int = 2, score: str = "clip_score", collapse: float = 0.9, keep_alt_text: bool = True) -> None:
        super().__init__()
        if k < 1:
            raise StageError("select.k must be at least 1")
        if not 0 < collapse <= 1:
            raise StageError("select.collapse must be in (0, 1]: the word-set Jaccard at which two captions count as one")
        self.k, self.score, self.collapse, self.keep_alt_text = k, score, collapse, keep_alt_text

    def process(self, batch: list[Pair]) -> None:
        for pair in batch:
            caps = pair.captions
            scored = [i for i in pair.current() if self.score in caps[i].scores]
            if not scored:
                continue
            alt = next((i for i in scored if caps[i].source == "alt-text" and caps[i].selected), None)
            if alt is None:
                alt = next((i for i in scored if caps[i].source == "alt-text"), None)
            model_made = [i for i in scored if caps[i].source.startswith(("vlm:", "altogether:"))]
            words = {i: word_set(caps[i].text) for i in scored}
            if len(model_made) > 1:
                sims = [jaccard(words[a], words[b]) for a, b in itertools.combinations(model_made, 2)]
                pair.scores["candidate_diversity"] = round(1 - sum(sims) / len(sims), 4)
            ranked = sorted(scored, key=lambda i: (-caps[i].scores[self.score], i))
            groups: list[int] = []  # the best of each group of near-identical captions
            for i in ranked:
                same = next((g for g in groups if jaccard(words[g], words[i]) >= self.collapse), None)
                if same is None:
                    groups.append(i)
                else:
                    caps[i].params["duplicate_of"] = same
            pair.scores["candidates_distinct"] = sum(1 for g in groups if g in model_made)
            chosen = groups[: self.k]
            if self.keep_alt_text and alt is not None and alt in chosen:
                chosen = chosen[: chosen.index(alt) + 1]
            for i, cap in enumerate(caps):
                cap.selected = i in chosen
            if alt is not None:
                base = caps[alt].scores[self.score]
                for i in ranked:
                    caps[i].scores["margin_vs_alt"] = round(caps[i].scores[self.score] - base, 4)
                pair.scores["select_margin"] = round(max(caps[chosen[0]].scores[self.score] - base, 0.0), 4)
