"""A synthetic world in which the image and the alt-text each hold what the other lacks.

Each image shows one to four shapes of one kind and one colour, grouped on one side of the
canvas: colour, count, shape and position are what only the image shows. Its alt-text, as on
the web, carries a made-up proper name (the "Velmor set") that no image can show, noise (a
file name, a date) and, for some images, a wrong claim (a colour the shapes do not have). The
reference caption, written by the generator as an annotator following the guideline would,
keeps the name, describes what is visible, and drops the noise and the wrong claim:

    alt-text:  "IMG_4821.jpg Velmor set blue circles"
    reference: "a photo of three red circles on the left from the Velmor set"

A captioner that reads the image and the alt-text can get everything right; from the image
alone it cannot know the name; from the alt-text alone it cannot know the colour, count or
position, and it would repeat the wrong claim.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (210, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 215), "yellow": (225, 195, 30), "purple": (140, 60, 175)}
SHAPES = ("circle", "square", "triangle")
COUNTS = ("one", "two", "three", "four")
POSITIONS = ("left", "right", "top", "bottom")
SYLLABLES = ("vel", "mor", "zan", "tri", "kol", "bex", "dar", "fen", "lum", "qua", "sol", "ryn", "tok", "wix", "pel", "gar")
SIDE = 64


@dataclass
class Scene:
    image_id: str
    colour: str
    shape: str
    count: int
    position: str
    name: str
    wrong_colour: str | None  # the colour the alt-text wrongly claims, if it does
    alt_text: str
    reference: str


def made_up_name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(SYLLABLES, size=2)).capitalize()


def noise(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return f"IMG_{int(rng.integers(1000, 9999))}.jpg"
    if kind == 1:
        return f"DSC{int(rng.integers(1000, 9999))}.JPG"
    return f"20{int(rng.integers(10, 24))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"


def describe(count: int, colour: str, shape: str, position: str) -> str:
    where = f"on the {position}" if position in ("left", "right") else f"at the {position}"
    return f"{COUNTS[count - 1]} {colour} {shape}{'s' if count > 1 else ''} {where}"


def scene(rng: np.random.Generator, image_id: str, wrong_claim_rate: float) -> Scene:
    colour = str(rng.choice(list(COLOURS)))
    shape, count, position = str(rng.choice(SHAPES)), int(rng.integers(1, 5)), str(rng.choice(POSITIONS))
    name = made_up_name(rng)
    wrong = str(rng.choice([c for c in COLOURS if c != colour])) if rng.random() < wrong_claim_rate else None
    parts = [noise(rng), f"{name} set"]
    if wrong:
        parts.append(f"{wrong} {shape}s")
    if rng.random() < 0.5:
        parts.reverse()
    reference = f"a photo of {describe(count, colour, shape, position)} from the {name} set"
    return Scene(image_id, colour, shape, count, position, name, wrong, " ".join(parts), reference)


def draw(s: Scene, rng: np.random.Generator) -> Image.Image:
    """The shapes, spread over the half of the canvas the position names, on a noisy ground."""
    ground = rng.integers(225, 250, (SIDE, SIDE, 3)).astype(np.uint8)
    img = Image.fromarray(ground)
    pen = ImageDraw.Draw(img)
    half = SIDE // 2
    box = {"left": (0, 0, half, SIDE), "right": (half, 0, SIDE, SIDE), "top": (0, 0, SIDE, half), "bottom": (0, half, SIDE, SIDE)}[s.position]
    slots = [(x, y) for x in (0.3, 0.7) for y in (0.3, 0.7)] if s.position in ("left", "right") else [(x, 0.5) for x in (0.14, 0.38, 0.62, 0.86)]
    order = rng.permutation(len(slots))[: s.count]
    r = 5
    for k in order:
        fx, fy = slots[k]
        cx = int(box[0] + fx * (box[2] - box[0]) + rng.integers(-2, 3))
        cy = int(box[1] + fy * (box[3] - box[1]) + rng.integers(-2, 3))
        fill = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in COLOURS[s.colour])
        if s.shape == "circle":
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif s.shape == "square":
            pen.rectangle((cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1), fill=fill)
        else:
            pen.polygon([(cx, cy - r), (cx - r, cy + r - 1), (cx + r, cy + r - 1)], fill=fill)
    return img


def build_world(folder: Path, n_train: int, n_test: int, seed: int = 0, wrong_claim_rate: float = 0.3) -> dict[str, list[Scene]]:
    """Write ``images/``, ``train.jsonl`` and ``test.jsonl`` (records ``{image, alt_text,
    caption}``, the captioner's fine-tuning format, plus the scene's facts)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[Scene]] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        scenes = [scene(rng, f"{split}-{i:05d}", wrong_claim_rate) for i in range(n)]
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for s in scenes:
                draw(s, rng).save(folder / "images" / f"{s.image_id}.png")
                fh.write(json.dumps({"image": f"images/{s.image_id}.png", "image_id": s.image_id, "alt_text": s.alt_text, "caption": s.reference, "scene": asdict(s)}) + "\n")
        splits[split] = scenes
    return splits


def world_texts(scenes: list[Scene]) -> list[str]:
    """Every text of the world, to train its tokenizer on."""
    return [t for s in scenes for t in (s.alt_text, s.reference)]
