"""The realign world: what the image shows, what the alt-text says, what the reference keeps."""

import numpy as np
from PIL import Image

from recaption.bench.world import COLOURS, SIDE, build_world, describe


def test_images_show_the_colour_count_and_position_and_only_the_alt_text_names_the_set(tmp_path):
    from skimage.measure import label

    splits = build_world(tmp_path, 40, 10, seed=3)
    assert [len(splits["train"]), len(splits["test"])] == [40, 10]
    assert any(s.wrong_colour for s in splits["train"])
    for s in splits["train"]:
        pixels = np.asarray(Image.open(tmp_path / "images" / f"{s.image_id}.png").convert("RGB")).astype(int)
        shape_mask = np.abs(pixels - np.array(COLOURS[s.colour])).max(axis=-1) < 40
        assert label(shape_mask, connectivity=1).max() == s.count  # one blob per shape, none touching
        ys, xs = np.nonzero(shape_mask)
        half = {"left": xs.max() < SIDE // 2, "right": xs.min() >= SIDE // 2, "top": ys.max() < SIDE // 2, "bottom": ys.min() >= SIDE // 2}
        assert half[s.position]
        assert s.name in s.alt_text and s.name in s.reference
        assert describe(s.count, s.colour, s.shape, s.position) in s.reference
        if s.wrong_colour:
            assert s.wrong_colour in s.alt_text and s.wrong_colour not in s.reference


def test_the_world_is_fixed_by_its_seed(tmp_path):
    a = build_world(tmp_path / "a", 5, 2, seed=1)
    b = build_world(tmp_path / "b", 5, 2, seed=1)
    assert a == b
    assert (tmp_path / "a" / "images" / "train-00000.png").read_bytes() == (tmp_path / "b" / "images" / "train-00000.png").read_bytes()
