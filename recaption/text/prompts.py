"""Instructions for vision-language captioners, and the evidence they may quote.

Templates are plain instructions; the captioner wraps them in its family's format (a chat
turn with the image, or BLIP-2's "Question: ... Answer:"). ``{alt_text}``, ``{ocr}`` and
``{tags}`` are filled from what earlier stages found; a user template may use the same
fields and no others.
"""

from __future__ import annotations

import string

TEMPLATES = {
    "plain": "Describe this image in one or two sentences.",
    # Anti-hallucination: say what is visible, guess nothing.
    "faithful": (
        "Describe only what you can see in this image, in one or two sentences. Do not guess names, places, "
        "dates or events that the image itself does not show."
    ),
    # Re-align mode (Altogether): the alt-text is evidence to keep, correct or drop.
    "realign": (
        'The alt-text of this image is: "{alt_text}". Text written in the image: {ocr}. Objects detected: {tags}. '
        "Write a caption for the image in one or two sentences: keep the concrete names from the alt-text that the "
        "image supports, drop what the image does not show, and add what is visible but missing."
    ),
}
FIELDS = ("alt_text", "ocr", "tags")


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_template(template: str) -> None:
    unknown = template_fields(template) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown prompt field(s) {sorted(unknown)}; a template may use {{alt_text}}, {{ocr}} and {{tags}}")


def render(template: str, alt_text: str = "", ocr: list[str] | None = None, tags: list[str] | None = None) -> str:
    return template.format(
        alt_text=alt_text or "(none)",
        ocr=", ".join(f'"{line}"' for line in ocr) if ocr else "none",
        tags=", ".join(tags) if tags else "none",
    )
