"""Training loaders over recaption's output: JSONL, Parquet and WebDataset, one caption policy."""

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from recaption.cli import main
from recaption.loaders import CaptionPolicy, ImageTextPairDataset, WebDatasetPairs, skip_broken_collate
from recaption.record import Caption, Pair
from tests.conftest import encode, image_pairs, noise_image

torch = pytest.importorskip("torch")


def test_caption_policy_original_selected_and_a_seeded_mix():
    pair = Pair("p", None, texts=["IMG_1.jpg a red car"], captions=[
        Caption("a red car", "alt-text", params={"text_index": 0}), Caption("a photo of a red car", "rules", selected=True)])
    assert CaptionPolicy("original").caption(pair, 0) == "a red car"  # the cleaned alt-text, never the raw one
    assert CaptionPolicy("selected").caption(pair, 0) == "a photo of a red car"
    mix = CaptionPolicy("mix", p=0.15, seed=3)
    draws = [mix.caption(pair, i) == "a photo of a red car" for i in range(4000)]
    assert 0.13 < sum(draws) / 4000 < 0.17
    assert draws == [CaptionPolicy("mix", p=0.15, seed=3).caption(pair, i) == "a photo of a red car" for i in range(4000)]
    mix.set_epoch(1)
    assert draws != [mix.caption(pair, i) == "a photo of a red car" for i in range(4000)]  # another epoch, another mix
    with pytest.raises(ValueError, match="mode"):
        CaptionPolicy("random")


def test_the_original_caption_is_the_cleaned_and_checked_alt_text():
    raw = "IMG_1.jpg a smiling woman on a red bike &amp; more at https://x.com via @bob, call +1 555 123 4567"
    # As a run leaves it: cleaned, then a sensitive-checked child that takes over.
    cleaned = Caption("a smiling woman on a red bike & more at via", "alt-text", params={"text_index": 0}, selected=True)
    checked = cleaned.edited("a woman on a red bike & more at via", 0, {})
    fitted = Caption("a red bike", "alt-text", params={"text_index": 1})  # a second text: not the alt-text
    pair = Pair("p", None, texts=[raw, "a red bike"], captions=[cleaned, checked, fitted])
    for mode in ("original", "mix"):
        assert CaptionPolicy(mode, p=0.0).caption(pair, 0) == "a woman on a red bike & more at via"
    # A dataset no run has seen is cleaned on the way out, models aside.
    unseen = CaptionPolicy("original").caption(Pair("q", None, texts=[raw]), 0)
    for leak in ("IMG_", "&amp;", "https://", "@bob", "555", "smiling"):
        assert leak not in unseen, unseen
    assert "red bike" in unseen


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """The same 12 pairs written by `recaption run --recipe clean` as JSONL, Parquet and WebDataset."""
    root = tmp_path_factory.mktemp("loaders")
    image_pairs(root, [[f"IMG_{i}.jpg &amp; a red car number {i}"] for i in range(12)], id_format="img-{i:02d}")
    for fmt in ("jsonl", "parquet", "webdataset"):
        args = ["run", str(root / "pairs.jsonl"), str(root / fmt), "--recipe", "clean", "--workers", "1", "--no-progress", "--output-format", fmt, "--shard-size", "4"]
        assert main(args) == 0
    return root


def processor(tiny_clip):
    import transformers as tf

    return tf.AutoProcessor.from_pretrained(tiny_clip)


def test_jsonl_and_parquet_datasets_index_the_file_and_agree(outputs, tiny_clip):
    jsonl = sorted((outputs / "jsonl" / "data").glob("*.jsonl"))[0]
    parquet = sorted((outputs / "parquet" / "data").glob("*.parquet"))[0]
    a, b = ImageTextPairDataset(jsonl), ImageTextPairDataset(parquet)
    assert len(a) == len(b) == 4 and a.offsets.dtype.name == "int64" and not hasattr(a, "data")  # offsets, not records
    for k in range(4):
        x, y = a[k], b[k]
        assert (x["image_id"], x["text"]) == (y["image_id"], y["text"]) and tuple(x["image"].shape) == (80, 96, 3) and x["image"].dtype == torch.uint8
        assert "&amp;" not in x["text"] and "IMG_" not in x["text"]  # the cleaned, selected caption
    original = ImageTextPairDataset(jsonl, policy=CaptionPolicy("original"))[0]["text"]
    assert "red car number" in original and "IMG_" not in original and "&amp;" not in original
    item = ImageTextPairDataset(jsonl, processor=processor(tiny_clip))[0]
    assert item["input_ids"].shape == (77,) and item["pixel_values"].shape == (3, 32, 32)  # padded to 77, as the seed's loader


def test_webdataset_splits_shards_across_workers_and_ranks_and_skips_broken_samples(outputs, tmp_path):
    shards = sorted((outputs / "webdataset" / "data").glob("*.tar"))
    assert len(shards) == 3
    broken = tmp_path / "broken.tar"
    with tarfile.open(broken, "w") as tar:
        for name, data in (("bad.jpg", b"not a jpeg"), ("bad.txt", b"a broken image"), ("ok.jpg", encode(noise_image(50))), ("ok.txt", b"a fine image")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    everything = [str(s) for s in shards] + [str(broken)]
    loader = torch.utils.data.DataLoader(WebDatasetPairs(everything), batch_size=3, num_workers=2, collate_fn=skip_broken_collate)
    seen, skipped = Counter(), 0
    for batch in loader:
        seen.update(batch.get("image_id", []))
        skipped += int(batch["skipped"])
    assert sorted(seen) == sorted([f"img-{i:02d}" for i in range(12)] + ["ok"]) and set(seen.values()) == {1}  # each once
    assert skipped == 1
    halves = [{s["image_id"] for s in WebDatasetPairs(everything, rank=r, world_size=2) if s} for r in (0, 1)]
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 13


@pytest.mark.parametrize("fmt", ["open_clip", "open_clip_csv", "llava", "diffusers", "hf"])
def test_exports_for_each_framework_use_the_caption_policy(outputs, tmp_path, fmt):
    import json

    out = tmp_path / fmt
    assert main(["export", str(outputs / "jsonl"), str(out), "--to", fmt, "--policy", "original", "--shard-size", "5"]) == 0
    if fmt == "open_clip":
        tars = sorted(out.glob("*.tar"))
        names = [n for t in tars for n in tarfile.open(t).getnames()]
        assert len(tars) == 3 and sum(n.endswith(".jpg") for n in names) == 12
        assert json.loads((out / "sizes.json").read_text()) == {"00000.tar": 5, "00001.tar": 5, "00002.tar": 2}  # open_clip's sample count
        text = tarfile.open(tars[0]).extractfile("000000000.txt").read().decode()
        assert "red car number" in text and "IMG_" not in text  # the alt-text as the policy asked: cleaned
        assert len(list(WebDatasetPairs(str(out)))) == 12  # our own loader reads it back
    elif fmt == "open_clip_csv":
        import csv

        rows = list(csv.DictReader(open(out / "train.csv", newline=""), delimiter="\t"))
        assert len(rows) == 12 and all(Path(r["filepath"]).exists() for r in rows) and "red car number" in rows[0]["title"]
    elif fmt == "llava":
        rows = json.loads((out / "llava.json").read_text())
        assert len(rows) == 12 and rows[0]["conversations"][0]["value"].startswith("<image>")
        for row in rows:  # LLaVA's LazySupervisedDataset schema: the fields, the turns, one <image> in the human turn
            assert set(row) == {"id", "image", "conversations"} and [t["from"] for t in row["conversations"]] == ["human", "gpt"]
            assert row["conversations"][0]["value"].count("<image>") == 1 and "<image>" not in row["conversations"][1]["value"]
        assert (out / "images" / rows[0]["image"]).read_bytes()[:2] == b"\xff\xd8"
    elif fmt == "diffusers":
        rows = [json.loads(line) for line in open(out / "train" / "metadata.jsonl")]
        assert len(rows) == 12 and all((out / "train" / r["file_name"]).exists() for r in rows)
    else:
        import pyarrow.parquet as pq

        tables = [pq.read_table(f) for f in sorted((out / "data").glob("train-*.parquet"))]
        assert [t.num_rows for t in tables] == [5, 5, 2] and tables[0].column("image")[0]["bytes"].as_py()[:2] == b"\xff\xd8"
    datasets = pytest.importorskip("datasets")  # the consumer's own loader, where it installs
    if fmt in ("hf", "diffusers"):
        kind, where = ("parquet", {"data_files": str(out / "data" / "*.parquet")}) if fmt == "hf" else ("imagefolder", {"data_dir": str(out / "train")})
        loaded = datasets.load_dataset(kind, split="train", **where)
        assert isinstance(loaded.features["image"], datasets.Image) and "label" not in loaded.column_names
        assert len(loaded) == 12 and loaded[0]["image"].mode == "RGB" and "red car number" in loaded[0]["text"]


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("side", [None, 224, 60])
def test_the_loaders_jpeg_decoder_gives_the_pixels_the_stages_see(mode, side):
    import numpy as np
    from PIL import Image
    from skimage import data

    from recaption.imaging import load_rgb, load_rgb_array

    photo = Image.fromarray(data.astronaut()).convert(mode)
    for variant in ("plain", "rotated", "png"):
        buf = io.BytesIO()
        if variant == "rotated":  # EXIF orientation 6: stored sideways, shown upright
            exif = Image.Exif()
            exif[0x0112] = 6
            photo.save(buf, "JPEG", quality=90, exif=exif)
        else:
            photo.save(buf, "PNG" if variant == "png" and mode != "CMYK" else "JPEG", quality=90)
        expected = np.asarray(load_rgb(buf.getvalue(), side))
        got = load_rgb_array(buf.getvalue(), side)
        assert got.dtype == np.uint8 and got.shape == expected.shape and (got == expected).all(), variant
    cut = buf.getvalue()[: len(buf.getvalue()) // 2]
    with pytest.raises(OSError):  # a damaged JPEG fails as PIL fails, so loaders skip it as before
        load_rgb_array(cut, side)


def test_for_a_processor_jpegs_decode_at_the_smallest_scale_that_covers_its_side():
    from PIL import Image

    from recaption.imaging import load_rgb_array

    for size in ((1024, 768), (768, 1024)):
        buf = io.BytesIO()
        noise_image(1, size).save(buf, "JPEG", quality=90)
        assert load_rgb_array(buf.getvalue(), 224).shape[:2] == (size[1] // 2, size[0] // 2)  # PIL's draft: halves only
        fine = load_rgb_array(buf.getvalue(), 224, any_scale=True)
        assert min(fine.shape[:2]) == 288 and fine.shape[:2] == (size[1] * 3 // 8, size[0] * 3 // 8)  # 3/8 of 768
    small = io.BytesIO()
    Image.new("RGB", (200, 150), "red").save(small, "JPEG")
    assert load_rgb_array(small.getvalue(), 224, any_scale=True).shape == (150, 200, 3)  # never upscaled
