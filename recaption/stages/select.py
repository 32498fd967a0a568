"""Decisions on stored scores: ``select`` keeps the best captions of each pair by a score
(strategy C's re-ranking); ``score_filter`` keeps the pairs whose score is in a range.

``select``:

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
from recaption.stages.base import Filter, Stage, StageError, register

_WORD = re.compile(r"\w+")


def word_set(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@register
class Select(Stage):
    name = "select"
    provides = ("score:select_margin", "score:candidate_diversity", "score:candidates_distinct", "caption_score:margin_vs_alt")
    batch_size = 256

    def __init__(self, *, k: int = 2, score: str = "clip_score", collapse: float = 0.9, keep_alt_text: bool = True) -> None:
        super().__init__()
        if k < 1:
            raise StageError("select.k must be at least 1")
        if not 0 < collapse <= 1:
            raise StageError("select.collapse must be in (0, 1]: the word-set Jaccard at which two captions count as one")
        self.k, self.score, self.collapse, self.keep_alt_text = k, score, collapse, keep_alt_text

    def facts_needed(self) -> list[set[str]]:
        return [{f"caption_score:{self.score}"}]

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


@register
class ScoreFilter(Filter):
    """Reject pairs whose stored ``score`` is below ``min`` or above ``max``: any score the
    report's what-if table shows (``nsfw``, ``text_area_share``, ``imagenet_top1_p``,
    ``tag_agreement``, ``aspect_ratio``, ...) on the pair (``on: pair``), or a caption score
    (``clip_score``, ``clip_tokens``, ...) of the selected caption (``on: selected``). Scores are
    made once; thresholds can change in a re-run of this stage alone.

    A pair without the score is rejected as ``not_scored`` (``missing: keep`` keeps it)."""

    name = "score_filter"
    batch_size = 256

    def __init__(self, *, score: str = "", min: float | None = None, max: float | None = None, on: str = "pair", missing: str = "reject") -> None:  # noqa: A002 - the recipe's own words
        super().__init__()
        if not score:
            raise StageError("score_filter.score names the score to filter on, e.g. nsfw or clip_score")
        if on not in ("pair", "selected"):
            raise StageError("score_filter.on must be 'pair' (pair scores) or 'selected' (the selected caption's scores)")
        if missing not in ("reject", "keep"):
            raise StageError("score_filter.missing must be 'reject' or 'keep'")
        if min is None and max is None:
            raise StageError("score_filter needs min, max or both")
        if min is not None and max is not None and min > max:
            raise StageError(f"score_filter.min ({min}) is above max ({max})")
        self.score, self.min, self.max, self.on, self.missing = score, min, max, on, missing
        self._reason = re.sub(r"[^a-z0-9_]+", "_", score.lower()).strip("_") or "score"

    def facts_needed(self) -> list[set[str]]:
        return [{f"{'score' if self.on == 'pair' else 'caption_score'}:{self.score}"}]

    def check(self, pair: Pair) -> tuple[str, str] | None:
        if self.on == "pair":
            value = pair.scores.get(self.score)
        else:
            selected = pair.selected()
            value = selected.scores.get(self.score) if selected is not None else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if self.missing == "keep":
                return None
            where = "the pair" if self.on == "pair" else "the selected caption"
            return ("not_scored", f"{where} has no {self.score} score: is the stage that makes it before score_filter?")
        if self.min is not None and value < self.min:
            return (f"{self._reason}_below_min", f"{self.score} {value:g} < {self.min:g}")
        if self.max is not None and value > self.max:
            return (f"{self._reason}_above_max", f"{self.score} {value:g} > {self.max:g}")
        return None
