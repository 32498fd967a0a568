"""Caption-writing stages. ``compose_caption``: strategy A of the method, rules over evidence."""

from __future__ import annotations

from recaption.record import Caption, Pair
from recaption.stages.base import Stage, StageError, register
from recaption.stages.tags import tag_values
from recaption.text.clip_tokens import CONTEXT_LENGTH, clip_tokenizer
from recaption.text.compose import Evidence, Label, compose, tag_agreement

VARIANTS = ("short", "long")



def evidence_of(pair: Pair) -> Evidence:
    """What the earlier stages learnt about a pair, in the form the writer takes."""
    alt = next((c.text for c in pair.captions if c.selected and c.source == "alt-text"), "")
    return Evidence(
        alt_text=alt,
        labels=[Label(t["label"], t["noun"], float(t["p"]), t.get("kind", "")) for t in tag_values(pair, "classify")],
        ocr=[t["text"] for t in tag_values(pair, "ocr")],
        colourfulness=pair.scores.get("colourfulness"),
        white_border=pair.scores.get("white_border"),
    )


@register
class ComposeCaption(Stage):
    """Write captions from the cleaned alt-text, classifier labels and OCR text.

    ``short`` fits CLIP's 77 tokens (at most ``short_tags`` labels), ``long`` is for
    generative models (more labels and text, up to ``long_max_tokens``). Each variant is a
    caption with ``source="rules"`` and its parameters; ``select`` picks the one that becomes
    the training caption (``none`` leaves the selection alone). ``scores.tag_agreement`` on
    the pair says how much of the classifier's belief the alt-text already states: where the
    alt-text says "cat" and the classifier "golden retriever", the alt-text's concept is kept
    and the agreement is low.
    """

    name = "compose_caption"
    batch_size = 256

    def __init__(
        self,
        *,
        variants: list[str] | None = None,
        select: str = "short",
        confident: float = 0.6,
        hedge_min: float = 0.3,
        short_tags: int = 1,
        long_tags: int = 3,
        short_max_tokens: int = CONTEXT_LENGTH,
        long_max_tokens: int = 200,
    ) -> None:
        super().__init__()
        self.variants = list(variants or VARIANTS)
        if not set(self.variants) <= set(VARIANTS) or not self.variants:
            raise StageError(f"compose_caption.variants must be taken from {VARIANTS}")
        if select not in (*self.variants, "none"):
            raise StageError(f"compose_caption.select must be one of {self.variants} or 'none'")
        if not 0 <= hedge_min <= confident <= 1:
            raise StageError("compose_caption needs 0 <= hedge_min <= confident <= 1")
        self.select = select
        self.confident, self.hedge_min = confident, hedge_min
        self.limits = {"short": (short_tags, short_max_tokens, 6), "long": (long_tags, long_max_tokens, 30)}

    def setup(self) -> None:
        self.count = clip_tokenizer().count

    def process(self, batch: list[Pair]) -> None:
        for pair in batch:
            ev = evidence_of(pair)
            if not ev.alt_text and not ev.labels:
                continue  # nothing to write from: leave the pair to a captioning model
            pair.scores["tag_agreement"] = tag_agreement(ev)
            parent = next((i for i, c in enumerate(pair.captions) if c.selected and c.source == "alt-text"), None)
            models = sorted({v["model"] for v in (pair.meta.get("tags") or {}).values() if isinstance(v, dict) and "model" in v})
            for variant in self.variants:
                max_tags, max_tokens, ocr_words = self.limits[variant]
                made = compose(ev, self.count, max_tokens, max_tags, ocr_words, self.confident, self.hedge_min)
                if not made.says_anything:
                    break  # "a photo" alone: no variant would say more
                if variant == self.select:
                    for cap in pair.captions:
                        cap.selected = False
                pair.captions.append(
                    Caption(
                        text=made.text,
                        source="rules",
                        round=1,
                        parent=parent,
                        params={"variant": variant, "prompt": made.prompt, "tags": made.tags, "hedged": made.hedged, "ocr": made.ocr},
                        model_hash=";".join(models) or None,
                        selected=variant == self.select,
                    )
                )
