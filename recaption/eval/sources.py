"""Which caption of a pair speaks for each caption source, and which texts are references.

A pair may hold many captions of one source: a VLM's N candidates, the rules writer's short
and long variants, edited copies that the sensitive-attribute checker made, a captioner's
rounds. A source's row in the table takes, per pair, one caption:

- rounds are sources of their own: ``altogether:m`` round 2 is the row ``altogether:m round 2``;
- an edited copy stands for the caption it corrected (the last edit in the chain);
- of several candidates, the selected one, else the first.

References (``--references``): a caption source (``human``), or a field of the records (a
string or a list of strings in ``meta``), by default ``references`` where the records have it,
else the ``human`` source where it exists.
"""

from __future__ import annotations

from recaption.record import Caption, Pair


def source_key(cap: Caption) -> str:
    return cap.source if cap.round <= 1 or cap.source in ("alt-text", "human") else f"{cap.source} round {cap.round}"


def current_captions(pair: Pair) -> dict[str, tuple[int, Caption]]:
    """Source key -> (index, caption) of the caption that speaks for it on this pair."""
    caps = pair.captions
    edit_of: dict[int, int] = {}  # index -> the edited copy that replaced it
    for i, cap in enumerate(caps):
        p = cap.parent
        if p is not None and 0 <= p < len(caps) and caps[p].source == cap.source and caps[p].round == cap.round:
            edit_of[p] = i
    edits = set(edit_of.values())

    def final(i: int) -> int:
        seen = set()
        while i in edit_of and i not in seen:
            seen.add(i)
            i = edit_of[i]
        return i

    chosen: dict[str, int] = {}
    for i, cap in enumerate(caps):
        if i in edits:
            continue
        key = source_key(cap)
        last = final(i)
        if key not in chosen or (caps[last].selected and not caps[chosen[key]].selected):
            chosen[key] = last
    if "alt-text" not in chosen and pair.texts:
        # A dataset that was never cleaned: its first text is the alt-text.
        return {"alt-text": (-1, Caption(pair.texts[0], "alt-text")), **{k: (i, caps[i]) for k, i in chosen.items()}}
    return {k: (i, caps[i]) for k, i in chosen.items()}


def reference_texts(pair: Pair, references: str | None, source_keys: set[str]) -> list[str]:
    """The pair's reference captions under the ``--references`` setting (see the module doc)."""
    if references is None:
        if isinstance(pair.meta.get("references"), (list, str)):
            references = "references"
        elif "human" in source_keys:
            references = "human"
        else:
            return []
    if references in source_keys:
        return [c.text for c in pair.captions if source_key(c) == references and c.text.strip()]
    value = pair.meta.get(references)
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [v for v in value or [] if isinstance(v, str) and v.strip()] if isinstance(value, list) else []


def parent_text(pair: Pair, cap: Caption) -> str | None:
    """The text a caption re-aligned or rewrote: its parent of another source or round (edits
    of one caption by the checker are walked past), where it has one."""
    seen = set()
    while cap.parent is not None and 0 <= cap.parent < len(pair.captions) and cap.parent not in seen:
        seen.add(cap.parent)
        parent = pair.captions[cap.parent]
        if parent.source != cap.source or parent.round != cap.round:
            return parent.text
        cap = parent
    return None
