"""What an alt-text says about the image's content, and what is only context.

Web alt-text often names the occasion or the photo itself, not what it shows: "family photo",
"holiday pics 2017", "beach day", "our trip", "famous". Such a text is no subject for a
caption ("a photo of family photo"). spaCy's parser splits the cleaned alt-text into noun
phrases; a phrase is context when its head is an occasion ("trip", "day", "party",
"Christmas") or the photo itself ("photo", "pics", "snapshot"), whatever modifies it. An
alt-text whose noun phrases are all context, and which names nothing else (no other noun or
verb), is context only: the caption is written from what the taggers saw, and the context is
recorded. An alt-text that also names content keeps its content as the subject.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OCCASION_HEADS = frozenset(
    "day days trip trips vacation vacations holiday holidays weekend weekends party parties outing outings visit visits "
    "getaway celebration celebrations event events memory memories adventure adventures fun time times moment moments "
    "occasion reunion christmas easter thanksgiving halloween hanukkah diwali eid birthday anniversary graduation "
    "honeymoon staycation throwback tbt mood vibes".split()
)
PHOTO_HEADS = frozenset(
    "photo photos photograph photographs picture pictures pic pics image images shot shots snapshot snapshots snap snaps "
    "upload uploads album albums collection".split()
)
# Parts of speech that name nothing by themselves ("famous", "best ... ever", "2017").
_EMPTY_POS = {"ADJ", "ADV", "NUM", "PUNCT", "DET", "PRON", "ADP", "CCONJ", "SCONJ", "PART", "INTJ", "AUX", "SPACE", "SYM", "X"}


@dataclass
class AltParts:
    names_content: bool  # False where the text is context only
    context: list[str] = field(default_factory=list)  # the context phrases found


def split_docs(docs: Any) -> list[AltParts]:
    """AltParts for each parsed alt-text (spaCy docs)."""
    out = []
    for doc in docs:
        context, covered = [], set()
        for chunk in doc.noun_chunks:
            head = chunk.root.lower_
            introduces = chunk.end < len(doc) and doc[chunk.end].lower_ == "of"  # "photograph of a retina": a medium, then content
            if head in OCCASION_HEADS or (head in PHOTO_HEADS and not introduces):
                context.append(chunk.text)
                covered.update(range(chunk.start, chunk.end))
        names_something = any(t.i not in covered and t.pos_ not in _EMPTY_POS for t in doc)
        out.append(AltParts(names_content=names_something or not len(doc), context=context))
    return out


def split_alt_texts(texts: list[str], nlp: Any) -> list[AltParts]:
    return split_docs(nlp.pipe(texts, batch_size=256))
