"""Every text rule costs time linear in the text: hostile alt-text must not stall a run.

Each rule is timed on a text of N characters and on one of 4N; the longer one may cost at
most 5x (a quadratic rule costs 16x). The units are the shapes that made the rules
quadratic before ("12-" runs, "black " chains, long runs of spaces, mention runs), and
the shapes around each pattern's repeated part.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from recaption.text.clean import RULES, AltTextRules
from recaption.text.clip_tokens import clip_tokenizer
from recaption.text.fit import chunk_to_budget, fit_to_budget
from recaption.text.sensitive import SensitiveAttributeFilter, remove_person_names
from recaption.text.vlm_output import tidy_generated

UNITS = [
    "12-", "black ", "a.", "@a ", "#a ", "a" , " ", "1 ", "(c) ", "photo by ", "IMG_1234_", "x.jpg ", "1/",
    "<", "&amp;", "J. ", "a person, ", "with ", "smiling ", "blonde ", ", ", "may ", "at ", "www.", "a@", "+1 ",
    "(", "- ", "| ", "the ", "Dr. ", "by ",
]
N = 3000


@dataclass
class Ent:
    start: int
    end: int
    label: str


def _names_everywhere(text: str) -> str:
    # Every other word a PERSON: the shape that made the name rule look back over the whole text.
    ents, pos = [], 0
    for i, word in enumerate(text.split(" ")):
        if word and i % 2:
            ents.append(Ent(pos, pos + len(word), "PERSON"))
        pos += len(word) + 1
    return remove_person_names(text, ents)[0]


RULE_FUNCTIONS: dict[str, Callable[[str], object]] = {
    **{f"clean.{name}": fn for name, fn in RULES.items()},
    "clean.all": AltTextRules().clean,
    "sensitive": SensitiveAttributeFilter().check,
    "names": _names_everywhere,
    "clip_tokens": clip_tokenizer().count,
    "fit": lambda t: fit_to_budget(t, clip_tokenizer().count, 77),
    "chunk": lambda t: chunk_to_budget(t[:4000], clip_tokenizer().count, 77),  # only the first 4000: chunking is the costly path
    "vlm_output": tidy_generated,
}


def _seconds(fn: Callable[[str], object], text: str) -> float:
    best = float("inf")
    for _ in range(3):  # the best of three: the machines are shared
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("name", sorted(RULE_FUNCTIONS))
def test_rule_cost_is_linear(name: str) -> None:
    fn = RULE_FUNCTIONS[name]
    worst: list[str] = []
    for unit in UNITS:
        short, long = unit * (N // len(unit)), unit * (4 * N // len(unit))
        for _ in range(2):  # a second look before blaming the rule for a busy machine
            t_short, t_long = _seconds(fn, short), _seconds(fn, long)
            # Below 20 ms the timer measures the machine, not the rule.
            if t_long < 0.02 or t_long < 5 * max(t_short, 0.004):
                break
        else:
            worst.append(f"{unit!r}: {t_short * 1000:.1f} ms -> {t_long * 1000:.1f} ms")
    assert not worst, f"{name} is not linear in the text: " + "; ".join(worst)
