import io

import numpy as np
import pytest
from PIL import Image

from recaption.dedup.image_hashes import perceptual_hash
from recaption.record import Pair
from recaption.stages.base import StageError
from recaption.stages.image import ImageCheck
from tests.conftest import encode, noise_image, photo


def run(data, **kwargs) -> Pair:
    pair = Pair(image_id="x", image=data, texts=["t"])
    ImageCheck(**kwargs)([pair])
    return pair


def decoded(pair: Pair) -> Image.Image:
    return Image.open(io.BytesIO(pair.image))


def test_good_jpeg_passes_untouched_with_description():
    data = encode(photo("chelsea"))
    pair = run(data)
    assert pair.reject is None
    assert pair.image == data  # not re-encoded
    assert pair.image_ext == "jpg"
    assert (pair.scores["width"], pair.scores["height"]) == (451, 300)
    assert len(pair.scores["sha256"]) == 64 and len(pair.scores["phash"]) == 16
    assert pair.meta["image_format"] == "JPEG"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "zero_bytes"),
        (b"<html>404</html>", "not_an_image"),
        (encode(photo("coffee"))[:5000], "truncated"),
        (None, "no_image"),
        ("https://example.com/a.jpg", "not_downloaded"),
        ("/nonexistent/dir/a.jpg", "missing_file"),
    ],
)
def test_broken_inputs_are_rejected_with_reason(data, reason):
    pair = run(data)
    assert pair.reject is not None and pair.reject.stage == "image_check"
    assert pair.reject.reason == reason


def test_decompression_bomb_is_rejected_before_decoding():
    bomb = encode(Image.new("1", (12000, 10000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    pair = run(bomb)
    assert pair.reject.reason == "decompression_bomb"
    assert run(encode(noise_image(1, (400, 300)), "PNG"), max_pixels=100_000).reject.reason == "decompression_bomb"


def test_cmyk_is_converted_to_rgb():
    pair = run(encode(photo("coffee").convert("CMYK")))
    assert pair.reject is None
    assert decoded(pair).mode == "RGB"
    assert pair.meta["image_rewritten"] == ["mode_CMYK"]


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (100, 100), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 50, 100))  # opaque blue left half
    pair = run(encode(rgba, "PNG"))
    img = decoded(pair)
    assert img.mode == "RGB"
    right = np.asarray(img)[50, 80]
    left = np.asarray(img)[50, 20]
    assert (right > 240).all(), right  # transparent became white, not black or red
    assert left[2] > 200 and left[0] < 40


def test_palette_with_transparency_and_gif():
    pal = noise_image(3, (120, 90)).quantize(8)
    pal.info["transparency"] = 0
    pair = run(encode(pal, "PNG", transparency=0))
    assert pair.reject is None and decoded(pair).mode == "RGB"
    gif = run(encode(noise_image(4, (120, 90)).quantize(16), "GIF"))
    assert gif.reject is None
    assert "format_GIF" in gif.meta["image_rewritten"]


def test_sixteen_bit_grayscale_keeps_its_range():
    arr = (np.linspace(0, 65535, 128 * 96).reshape(96, 128)).astype(np.uint16)
    pair = run(encode(Image.fromarray(arr), "PNG"))
    img = np.asarray(decoded(pair))
    assert img.shape == (96, 128, 3)
    assert img.min() < 10 and img.max() > 245  # scaled to 8 bits, not clipped to white


def test_keep_formats_reencodes_the_others_as_jpeg():
    png = io.BytesIO()
    photo("chelsea").save(png, format="PNG")
    assert run(png.getvalue()).image == png.getvalue()  # PNG passes through by default
    pair = run(png.getvalue(), keep_formats=["jpg"])  # one image type for the whole output
    assert (pair.image_ext, decoded(pair).format, pair.meta["image_rewritten"]) == ("jpg", "JPEG", ["format_PNG"])
    jpeg = encode(photo("chelsea"))
    assert run(jpeg, keep_formats="JPEG").image == jpeg
    with pytest.raises(StageError, match="keep_formats"):
        ImageCheck(keep_formats=["PNG"])  # the re-encoded ones are JPEG: it always stays


def test_grayscale_becomes_rgb():
    pair = run(encode(photo("camera")))
    assert decoded(pair).mode == "RGB"
    assert pair.meta["image_mode"] == "L"


def test_exif_orientation_is_applied():
    upright = noise_image(5, (200, 100))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the camera saved it on its side
    exif = Image.Exif()
    exif[0x0112] = 6
    pair = run(encode(stored, exif=exif.tobytes(), quality=95))
    img = decoded(pair)
    assert img.size == (200, 100)
    diff = np.abs(np.asarray(img, dtype=int) - np.asarray(upright, dtype=int)).mean()
    assert diff < 12
    assert pair.meta["image_rewritten"] == ["exif_orientation_6"]


def test_size_and_aspect_filters():
    assert run(encode(noise_image(1, (60, 200))), min_side=64).reject.reason == "too_small"
    assert run(encode(noise_image(1, (400, 100)))).reject.reason == "aspect_ratio"
    assert run(encode(noise_image(1, (400, 100))), max_aspect_ratio=5).reject is None


@pytest.mark.parametrize(
    "mode,expected",
    [("keep_ratio", (192, 128)), ("center_crop", (128, 128)), ("border", (128, 128))],
)
def test_resize_modes(mode, expected):
    pair = run(encode(noise_image(2, (300, 200))), resize=mode, size=128)
    assert decoded(pair).size == expected
    assert (pair.scores["width"], pair.scores["height"]) == expected


def test_border_pads_with_the_border_colour():
    pair = run(encode(noise_image(2, (300, 150))), resize="border", size=100, border_color=[0, 255, 0])
    top_row = np.asarray(decoded(pair))[2, 50]
    assert top_row[1] > 200 and top_row[0] < 60


def test_unknown_resize_mode_fails_when_built():
    with pytest.raises(StageError, match="resize"):
        ImageCheck(resize="stretch")


def test_perceptual_hash_survives_resize_and_reencode_but_separates_photos():
    def dist(a, b):
        return bin(int(perceptual_hash(a), 16) ^ int(perceptual_hash(b), 16)).count("1")

    cat = photo("chelsea")
    small = Image.open(io.BytesIO(encode(cat.resize((225, 150)), quality=60)))
    assert dist(cat, small) <= 4
    for other in ("coffee", "astronaut", "rocket"):
        assert dist(cat, photo(other)) > 12


def test_perceptual_hash_agrees_with_imagehash():
    imagehash = pytest.importorskip("imagehash")
    for name in ("chelsea", "coffee", "astronaut"):
        img = photo(name)
        ours = int(perceptual_hash(img), 16)
        theirs = int(str(imagehash.phash(img)), 16)
        # Same algorithm (DCT of 32x32 grey, 8x8 low band vs median); only the resampling differs.
        assert bin(ours ^ theirs).count("1") <= 6


def test_pass_through_jpeg_is_fully_validated_and_hashed_like_a_full_decode():
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        data = encode(photo(name).convert("RGB"), quality=90)
        pair = run(data)
        assert pair.image == data  # reduced decode: nothing re-encoded
        full = Image.open(io.BytesIO(data))
        full.load()
        assert (pair.scores["width"], pair.scores["height"]) == full.size
        distance = bin(int(pair.scores["phash"], 16) ^ int(perceptual_hash(full), 16)).count("1")
        assert distance <= 4, (name, distance)
    # Every byte is still decoded: a JPEG cut anywhere after its header is caught.
    data = encode(photo("astronaut"), quality=90)
    for cut in (len(data) // 4, len(data) // 2, len(data) - 200):
        assert run(data[:cut]).reject.reason == "truncated"


def test_look_scores_tell_grey_and_white_background_images():
    grey = run(encode(photo("camera")))
    colour = run(encode(photo("coffee")))
    assert grey.scores["colourfulness"] < 2 < colour.scores["colourfulness"]
    product = Image.new("RGB", (300, 300), "white")
    product.paste(photo("coffee").resize((150, 100)), (75, 100))
    on_white = run(encode(product, quality=95))
    assert on_white.scores["white_border"] > 0.9 and colour.scores["white_border"] < 0.2


def test_flat_share_tells_a_logo_from_photos():
    from skimage import data

    logo = Image.fromarray(data.logo())
    canvas = Image.new("RGB", logo.size, "white")
    canvas.paste(logo, mask=logo.getchannel("A"))
    graphic = run(encode(canvas, "PNG")).scores["flat_share"]
    photos = [run(encode(photo(name))).scores["flat_share"] for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")]
    # A clear sky is flat too (the rocket: 0.33): compose_caption also asks for a white border.
    assert graphic >= 0.4 > max(photos), (graphic, photos)


def test_a_uniform_frame_is_trimmed_before_hashing_only_when_on_all_four_sides():
    from PIL import ImageOps

    from recaption.dedup.image_hashes import image_hashes, trim_border
    from tests.conftest import photo

    img = photo("coffee", (160, 120))
    framed = ImageOps.expand(img, border=10, fill=(0, 0, 0))
    assert trim_border(framed.resize((128, 128))) is not None
    assert trim_border(img.resize((128, 128))) is None
    one_side = ImageOps.expand(img, border=(0, 20, 0, 0), fill=(0, 0, 0))  # a dark top edge, as photos have
    assert trim_border(one_side.resize((128, 128))) is None
    assert trim_border(Image.new("RGB", (128, 128), (9, 9, 9))) is None  # all one colour: nothing to trim to
    whole, _, _ = image_hashes(img)
    boxed, _, _ = image_hashes(framed)
    assert bin(int(whole, 16) ^ int(boxed, 16)).count("1") <= 4
