"""Tidy what a vision-language model wrote into a caption.

- the prompt echoed back, and chat artefacts ("ASSISTANT:", "<|im_end|>", "[/INST]"), go; a
  new turn the model starts on its own ("USER: ...") is cut off;
- "The image shows ..." style openings become the starting prompt ("a photo of ..."), as
  the annotation guideline wants;
- text cut off by the token limit ends at the last full sentence, when there is one.
"""

from __future__ import annotations

import re

_ARTEFACT = re.compile(r"(?i)<\|im_end\|>|<\|endoftext\|>|</s>|<s>|\[/?INST\]|^\s*(?:assistant|gpt|answer)\s*:\s*")
_NEXT_TURN = re.compile(r"(?i)\s*(?:\b(?:USER|HUMAN|Question)\s*:|<\|im_start\|>).*$", re.S)
_OPENING = re.compile(
    r"(?i)^\s*(?:in\s+)?(?:the|this)\s+(?:image|picture|photo|photograph|scene)\s*"
    r"(?:,\s*(?:we\s+can\s+see|there\s+(?:is|are))|(?:shows|depicts|features|displays|captures|contains|presents|is\s+of|is)\b)\s*"
    r"|^\s*(?:we\s+can\s+see|there\s+(?:is|are))\s+(?:in\s+(?:the|this)\s+(?:image|picture)\s*,?\s*)?"
)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_SPACES = re.compile(r"\s+")


def tidy_generated(text: str, prompt: str = "", starting_prompt: str = "a photo of") -> str:
    out = text.strip()
    if prompt and out.lower().startswith(prompt.strip().lower()):
        out = out[len(prompt.strip()) :]
    out = _NEXT_TURN.sub("", _ARTEFACT.sub("", out.strip()))
    out = _SPACES.sub(" ", out).strip().strip('"').strip()
    opened = _OPENING.match(out)
    if opened and starting_prompt:
        out = f"{starting_prompt} {out[opened.end():].lstrip()}"
    if out and out[-1] not in '.!?"':
        ends = list(_SENTENCE_END.finditer(out))
        if ends:
            out = out[: ends[-1].end()]
    return out.strip()
