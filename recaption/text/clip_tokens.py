"""Exact CLIP BPE token counts, offline.

CLIP's text encoder sees at most 77 tokens, the start and end tokens included. Counting
with a whitespace split or a different BPE under-counts punctuation and rare words, so
captions that "fit" get silently truncated at training time. This module reimplements the
CLIP tokenizer's algorithm (ftfy + HTML unescape, lower-case, the same pre-tokenising
pattern, byte-level BPE with ``</w>`` word ends) over the merge table that ships with the
package, and is checked against ``transformers.CLIPTokenizer`` in the tests.
"""

from __future__ import annotations

import gzip
import html
import re
from functools import lru_cache
from importlib import resources

import ftfy
import regex

CONTEXT_LENGTH = 77  # CLIP's text budget, start and end tokens included
SPECIAL_TOKENS = 2

# Same split as CLIP: contractions, letter runs, single digits, runs of other symbols.
_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = re.compile(r"\s+")


def _byte_alphabet() -> dict[int, str]:
    """Map every byte to a printable unicode character (GPT-2 / CLIP byte-level BPE)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word, word[1:]))


class ClipBpeTokenizer:
    """CLIP's tokenizer: ``encode`` gives token ids, ``count`` the length with start/end."""

    def __init__(self) -> None:
        data = resources.files("recaption.text") / "data" / "bpe_simple_vocab_16e6.txt.gz"
        with data.open("rb") as fh:
            lines = gzip.decompress(fh.read()).decode("utf-8").split("\n")
        # The file's first line is a version header; CLIP uses the first 48,894 merges.
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        self._byte_encoder = _byte_alphabet()
        vocab = list(self._byte_encoder.values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot_id = self.encoder["<|startoftext|>"]
        self.eot_id = self.encoder["<|endoftext|>"]
        self._cache: dict[str, list[str]] = {
            "<|startoftext|>": ["<|startoftext|>"],
            "<|endoftext|>": ["<|endoftext|>"],
        }

    @staticmethod
    def normalise(text: str) -> str:
        text = ftfy.fix_text(text)
        text = html.unescape(html.unescape(text))
        return _WHITESPACE.sub(" ", text).strip().lower()

    def _bpe(self, token: str) -> list[str]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        while pairs:
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = list(word)
        if len(self._cache) < 200_000:  # bounded: web text has a long tail of words
            self._cache[token] = out
        return out

    def tokens(self, text: str) -> list[str]:
        out: list[str] = []
        for piece in _PRETOKENIZE.findall(self.normalise(text)):
            mapped = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            out.extend(self._bpe(mapped))
        return out

    def encode(self, text: str) -> list[int]:
        return [self.encoder[t] for t in self.tokens(text)]

    def count(self, text: str) -> int:
        """Tokens CLIP's text encoder would see, start and end tokens included."""
        return len(self.tokens(text)) + SPECIAL_TOKENS


@lru_cache(maxsize=1)
def clip_tokenizer() -> ClipBpeTokenizer:
    """One tokenizer per process: building the merge table takes about a second."""
    return ClipBpeTokenizer()


def hf_clip_tokenizer():
    """The same vocabulary and merges as a ``transformers.CLIPTokenizer`` (offline), for
    CLIP-style models built from scratch (the tests' and the realign benchmark's)."""
    import transformers as tf  # noqa: PLC0415 - transformers, loaded only where it is used

    path = resources.files("recaption.text") / "data" / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    return tf.CLIPTokenizer(vocab=clip_tokenizer().encoder, merges=[tuple(m.split()) for m in lines])
