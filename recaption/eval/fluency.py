"""Fluency of captions from a language model.

- Default: the English trigram model that ships with ``pocketsphinx`` (CMU Sphinx's
  ``en-us.lm.bin``, loaded in milliseconds, no network). A caption's score is the mean natural
  log-probability per word, sentence end included, over the words the model knows; words it
  does not know (names, numbers, rare words) are left out and counted (``oov_rate``).
  Perplexity is ``exp(-mean log-probability)``: lower is more fluent.
- Any Hugging Face causal LM (``--fluency-model``): the same, per token of its tokenizer.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from recaption.models.hf import load_pretrained, resolve_device

_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")
_ZERO = -(2**28)  # what pocketsphinx returns for a word it does not know (log(0) in its units)


@dataclass
class Fluency:
    logprob: float  # mean natural log-probability per scored word (or token)
    words: int  # how many were scored
    oov: int  # how many the model did not know


class TrigramFluency:
    """Scores with pocketsphinx's bundled English trigram model."""

    name = "pocketsphinx en-us trigram"

    def __init__(self, path: str | None = None) -> None:
        try:
            import pocketsphinx as ps  # noqa: PLC0415 - pocketsphinx, loaded only where it is used
        except ImportError as exc:
            raise ValueError("fluency needs pocketsphinx (its English trigram model): pip install pocketsphinx") from exc
        path = path or os.path.join(ps.get_model_path(), "en-us", "en-us.lm.bin")
        self.lm = ps.NGramModel.readfile(path)
        self.logmath = ps.LogMath()
        self._cache: dict[tuple[str, ...], float] = {}

    def _ln(self, words: tuple[str, ...]) -> float | None:
        if words not in self._cache:
            raw = self.lm.prob(list(words))
            self._cache[words] = math.nan if raw <= _ZERO else self.logmath.log_to_ln(raw)
        value = self._cache[words]
        return None if math.isnan(value) else value

    def score(self, text: str) -> Fluency:
        words = _WORDS.findall(text.lower())
        if not words:
            return Fluency(math.nan, 0, 0)
        history = ["<s>"]
        total, scored, oov = 0.0, 0, 0
        for word in [*words, "</s>"]:
            # pocketsphinx wants the word first, then its history, most recent first.
            ln = self._ln((word, *reversed(history[-2:])))
            if ln is None:
                oov += 1
                history = ["<s>"]  # an unknown word breaks the context, as a sentence start would
                continue
            total += ln
            scored += 1
            history.append(word)
        return Fluency(total / scored if scored else math.nan, scored, oov)


class CausalLmFluency:
    """Scores with any Hugging Face causal LM (per token of its own tokenizer)."""

    def __init__(self, model: str, device: str = "auto", batch_size: int = 32) -> None:
        import torch  # noqa: PLC0415 - torch, loaded only where it is used
        import transformers as tf  # noqa: PLC0415 - transformers, loaded only where it is used


        self.torch = torch
        self.device = resolve_device(device)
        self.tokenizer = load_pretrained(tf.AutoTokenizer, model, "fluency model's tokenizer")
        self.model = load_pretrained(tf.AutoModelForCausalLM, model, "fluency model").to(self.device).eval()
        self.name = model
        self.batch_size = batch_size

    def scores(self, texts: list[str]) -> list[Fluency]:
        torch = self.torch
        out: list[Fluency] = []
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        for start in range(0, len(texts), self.batch_size):
            ids = [[bos, *self.tokenizer(t, add_special_tokens=False)["input_ids"]] for t in texts[start : start + self.batch_size]]
            width = max(len(i) for i in ids)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else bos
            batch = torch.tensor([i + [pad] * (width - len(i)) for i in ids], device=self.device)
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch[:, 1:, None]).squeeze(-1) * mask[:, 1:]
            for row, n in zip(logp, (len(i) - 1 for i in ids)):
                out.append(Fluency(float(row.sum()) / n if n else math.nan, n, 0))
        return out

    def score(self, text: str) -> Fluency:
        return self.scores([text])[0]


def load_fluency(model: str | None = None) -> Any:
    """The default trigram model, or the causal LM ``model`` (hub id or folder)."""
    return CausalLmFluency(model) if model else TrigramFluency()
