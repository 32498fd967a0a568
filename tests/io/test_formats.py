"""Every format: read, write, read back; and every kind of broken input becomes a reject."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recaption.io import detect_format, open_reader, open_writer
from recaption.io.base import InputError, ReaderOptions
from recaption.record import Caption, Pair
from tests.conftest import encode, noise_image, write_jsonl


def read_all(path, fmt=None, **opts):
    reader = open_reader(path, fmt, ReaderOptions(**opts))
    return [p for shard in reader.plan() for p in reader.read(shard)]


def sample_pairs(n=3):
    pairs = []
    for i in range(n):
        p = Pair(f"id/{i}", encode(noise_image(i)), texts=[f"alt {i}"], image_ext="jpg", meta={"quality_score": 0.1 * i})
        p.captions.append(Caption(f"caption {i}", "alt-text", selected=True, scores={"clip_tokens": 4}))
        p.scores["width"] = 96
        pairs.append(p)
    return pairs


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "webdataset", "imagefolder"])
def test_writer_output_reads_back_losslessly(tmp_path, fmt):
    pairs = sample_pairs()
    writer = open_writer(fmt, tmp_path / "data")
    written = writer.write("part-00000", pairs)
    assert written.exists()
    assert not list((tmp_path / "data").glob(".*.tmp"))  # no temporaries left behind
    back = read_all(tmp_path / "data", fmt)
    assert [p.image_id for p in back] == [p.image_id for p in pairs]
    for orig, got in zip(pairs, back):
        assert got.texts == orig.texts
        assert [c.text for c in got.captions] == [c.text for c in orig.captions]
        assert got.captions[0].selected and got.scores["width"] == 96
        assert got.meta["quality_score"] == orig.meta["quality_score"]
        data = got.image if isinstance(got.image, bytes) else Path(got.image).read_bytes()
        assert data == orig.image


def test_jsonl_seed_schema_and_image_root(tmp_path):
    (tmp_path / "imgs").mkdir()
    noise_image(1).save(tmp_path / "imgs" / "a.jpg")
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"image_id": "a", "image_path": "imgs/a.jpg", "texts": ["x", "y"], "quality_score": 0.9}])
    (pair,) = read_all(path)
    assert pair.image == str(tmp_path / "imgs" / "a.jpg")
    assert pair.texts == ["x", "y"] and pair.meta == {"quality_score": 0.9}
    (other,) = read_all(path, image_root=str(tmp_path / "elsewhere"))
    assert other.image == str(tmp_path / "elsewhere" / "imgs" / "a.jpg")


def test_jsonl_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"key": "k1", "file": "a.jpg", "caption": "a cat", "alt": "ignored"}])
    (pair,) = read_all(path, text_field="caption", image_field="file")
    assert (pair.image_id, pair.texts, Path(pair.image).name) == ("k1", ["a cat"], "a.jpg")
    (bad,) = read_all(path, text_field="description")
    assert bad.reject.key == "read/missing_field"


def test_jsonl_broken_lines_become_rejects(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'{"image_id": "ok", "image_path": "a.jpg", "texts": ["fine"]}\n'
        b"not json\n"
        b'{"image_id": "t", "image_path": "a.jpg", "texts": {"en": "x"}}\n'
        b'{"image_id": "n", "image_path": "a.jpg", "texts": ["caf\xe9"]}\n'
        b"\n"
        b'["a", "list"]\n'
        b'{"image_id": "w", "image_path": "a.jpg", "texts": [1, 2]}\n'
        b'{"image_id": {"nested": 1}, "texts": ["x"]}\n'
    )
    pairs = read_all(path)
    reasons = [(p.image_id, p.reject.reason if p.reject else None) for p in pairs]
    assert reasons == [
        ("ok", None),
        ("p:2", "malformed_json"),
        ("t", "wrong_type"),
        ("p:4", "non_utf8"),
        ("p:6", "wrong_type"),
        ("w", "wrong_type"),
        ("p:8", "wrong_type"),
    ]
    assert all(p.origin["file"] == str(path) for p in pairs)


def test_jsonl_shards_by_line_runs(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"image_id": str(i), "texts": ["x"]} for i in range(25)])
    reader = open_reader(path, None, ReaderOptions(shard_size=10))
    plan = reader.plan()
    assert [s.spec["lines"] for s in plan] == [10, 10, 5]
    assert [p.image_id for p in reader.read(plan[2])] == [str(i) for i in range(20, 25)]


def make_tar(path: Path, members: list[tuple[str, bytes]], kind: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (kind or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target.decode()
            tar.addfile(info)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "webdataset", "imagefolder"])
def test_a_shard_that_keeps_nothing_is_written_and_reads_back(tmp_path, fmt):
    """Ordinary data does this (a shard of content-free alt-texts under the clean recipe): the
    empty shard, then a full one, finished as a dataset and read back by us."""
    writer = open_writer(fmt, tmp_path / "data")
    writer.write("part-00000", [])
    writer.write("part-00001", sample_pairs(2))
    writer.finish_dataset()
    writer.finish_dataset()  # a re-run finishes the same files again
    back = read_all(tmp_path / "data", fmt)
    assert [p.image_id for p in back] == ["id/0", "id/1"] and all(p.reject is None for p in back)
    if fmt == "webdataset":
        datasets = pytest.importorskip("datasets")
        assert datasets.load_dataset(str(tmp_path / "data"), split="train").num_rows == 2


def _npy(array, **kwargs) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def test_one_records_carried_member_cannot_make_the_dataset_unloadable(tmp_path):
    """A KEY.cls of 10**29 (int64 on the card: OverflowError) and a pickled-object KEY.npy
    (allow_pickle=False) once broke datasets.load_dataset for the whole output: each is dropped
    from its own record and named in meta.dropped_members; the others are carried."""
    datasets = pytest.importorskip("datasets")
    pairs = sample_pairs(4)
    pairs[0].extras = {"cls": b"3", "npy": _npy(np.arange(3))}
    pairs[1].extras = {"cls": str(10**29).encode(), "npy": _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True)}
    pairs[2].extras = {"cls": b"not a number", "npz": b"PK broken"}
    pairs[3].extras = {"cls": b"7"}
    writer = open_writer("webdataset", tmp_path / "data")
    writer.write("part-00000", pairs)
    writer.finish_dataset()
    loaded = datasets.load_dataset(str(tmp_path / "data"), split="train")
    assert loaded["cls"] == [3, None, None, 7] and loaded[0]["npy"] == [0, 1, 2]
    dropped = [row["meta"].get("dropped_members") for row in (json.loads(r) if isinstance(r, str) else r for r in loaded["json"])]
    assert dropped[0] is None and dropped[3] is None
    assert any("64 bits" in d for d in dropped[1]) and any("pickle" in d for d in dropped[1])
    assert any("not an integer" in d for d in dropped[2]) and any(".npz" in d for d in dropped[2])
    back = read_all(tmp_path / "data")
    assert back[0].extras["cls"] == b"3" and "cls" not in back[1].extras and "npy" not in back[1].extras


def test_webdataset_output_loads_in_hugging_face_datasets_whatever_the_records_hold(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = sample_pairs(3)
    pairs[0].meta["quality_score"] = 0  # an int where the others are floats: HF would truncate 0.1 to 0
    pairs[1].meta["extra"] = {"a": 1}  # kinds that disagree: JSON text
    pairs[2].meta["extra"] = "plain"
    pairs[2].scores["faces"] = 1  # only in the second shard
    writer = open_writer("webdataset", tmp_path / "data")
    writer.write("part-00000", pairs[:2])
    writer.write("part-00001", pairs[2:])
    assert writer.finish_dataset() == []
    loaded = datasets.load_dataset(str(tmp_path / "data"), split="train")  # its dataset card names the features
    assert [row["meta"]["quality_score"] for row in loaded["json"]] == [0.0, 0.1, pytest.approx(0.2)]
    assert [row["scores"]["faces"] for row in loaded["json"]] == [None, None, 1]
    assert loaded[0]["txt"] == "caption 0" and loaded[2]["jpg"].size == (96, 80)
    back = read_all(tmp_path / "data")
    assert [p.meta for p in back] == [p.meta for p in pairs] and [p.scores for p in back] == [p.scores for p in pairs]


def test_webdataset_output_that_mixes_image_types_says_how_to_make_one(tmp_path):
    pairs = sample_pairs(2)
    png = io.BytesIO()
    noise_image(5).save(png, format="PNG")
    pairs[1].image, pairs[1].image_ext = png.getvalue(), "png"
    writer = open_writer("webdataset", tmp_path / "data")
    writer.write("part-00000", pairs)
    (note,) = writer.finish_dataset()
    assert "1 jpg, 1 png" in note and "image_check.keep_formats=[JPEG]" in note
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(tmp_path / "data"), split="train")  # both types, by the card
    assert [(row["jpg"] is None, row["png"] is None) for row in loaded] == [(False, True), (True, False)]


def test_webdataset_hostile_members_are_rejected_not_trusted(tmp_path):
    img = encode(noise_image(1))
    shards = tmp_path / "shards"
    shards.mkdir()
    make_tar(
        shards / "00000.tar",
        [
            ("good.jpg", img), ("good.txt", b"a fine pair"),
            ("/etc/evil.jpg", img), ("/etc/evil.txt", b"absolute"),
            ("../../escape.jpg", img), ("../../escape.txt", b"climbs out"),
            ("latin.jpg", img), ("latin.txt", b"caf\xe9"),
            ("meta.jpg", img), ("meta.json", b'{"caption": "from json", "key": "m-1", "url": "http://x"}'),
        ],
        kind={"link.jpg": b"/etc/passwd"},
    )
    pairs = read_all(shards)
    by_id = {p.image_id: p for p in pairs}
    assert by_id["good"].reject is None and by_id["good"].texts == ["a fine pair"] and by_id["good"].image == img
    assert by_id["/etc/evil"].reject.reason == "unsafe_member" and "absolute path" in by_id["/etc/evil"].reject.detail
    assert by_id["../../escape"].reject.reason == "unsafe_member"
    assert by_id["latin"].reject.reason == "non_utf8"
    assert by_id["m-1"].texts == ["from json"] and by_id["m-1"].meta["url"] == "http://x"
    assert by_id["link"].reject.reason == "unsafe_member"
    assert not (tmp_path / "escape.jpg").exists()


def test_webdataset_members_no_stage_reads_are_carried_to_the_output(tmp_path):
    import numpy as np

    from recaption.cli import main
    from recaption.limits import MAX_EXTRA_BYTES
    vec = io.BytesIO()
    np.save(vec, np.arange(3, dtype=np.float32))
    seg = io.BytesIO()
    noise_image(9).save(seg, format="PNG")
    members = []
    for i in range(3):
        members += [(f"s{i}.jpg", encode(noise_image(i))), (f"s{i}.txt", f"a photo of noise {i}".encode()),
                    (f"s{i}.cls", str(i).encode()), (f"s{i}.npy", vec.getvalue()), (f"s{i}.seg.png", seg.getvalue())]
        if i == 0:
            members += [("s0.a b", b"odd name"), ("s0.big", bytes(MAX_EXTRA_BYTES + 1))]  # not carried: named, and the sample goes on
    (tmp_path / "in").mkdir()
    make_tar(tmp_path / "in" / "00000.tar", members)
    assert main(["run", str(tmp_path / "in"), str(tmp_path / "out"), "--recipe", "clean", "--no-progress", "--set", "image_check.min_side=8"]) == 0
    with tarfile.open(tmp_path / "out" / "data" / "part-00000.tar") as tar:
        names = {m.name: tar.extractfile(m).read() for m in tar}
    assert names["s1.cls"] == b"1" and names["s2.npy"] == vec.getvalue() and names["s0.seg.png"] == seg.getvalue()
    (s0,) = [p for p in read_all(tmp_path / "out" / "data") if p.image_id == "s0"]
    assert sorted(s0.extras) == ["cls", "npy", "seg.png"] and len(s0.meta["dropped_members"]) == 2
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(tmp_path / "out" / "data"), split="train")
    assert sorted(loaded["cls"]) == [0, 1, 2] and loaded[0]["npy"] == [0.0, 1.0, 2.0] and loaded[0]["seg.png"].size == (96, 80)
    # An output format that cannot hold them says so in each record.
    assert main(["run", str(tmp_path / "in"), str(tmp_path / "js"), "--recipe", "clean", "--no-progress", "--set", "image_check.min_side=8", "--output-format", "jsonl"]) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "js" / "data" / "part-00000.jsonl").read_text().splitlines() if '"s1"' in line]
    assert record["meta"]["dropped_members"] == [f".{e}: this output format holds no extra members" for e in ("cls", "npy", "seg.png")]


def test_webdataset_truncated_tar_keeps_what_it_can_and_says_where(tmp_path):
    img = encode(noise_image(1), quality=95)
    full = make_tar(tmp_path / "full.tar", [(f"{i:03d}.jpg", img) for i in range(5)] + [("zz.txt", b"x")])
    data = full.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    pairs = read_all(cut)
    assert pairs[-1].reject.reason == "corrupt_shard"
    assert len(pairs) >= 2


def test_empty_tar_is_an_empty_shard(tmp_path):
    make_tar(tmp_path / "empty.tar", [])
    assert read_all(tmp_path / "empty.tar") == []


def test_parquet_with_hf_image_struct_and_path_columns(tmp_path):
    img = encode(noise_image(2))
    table = pa.table({
        "id": ["a", "b"],
        "image": [{"bytes": img, "path": None}, {"bytes": img, "path": None}],
        "text": ["one", "two"],
        "extra": [1, 2],
    })
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=1)
    pairs = read_all(tmp_path / "d.parquet")
    assert [(p.image_id, p.texts, p.image == img, p.meta["extra"]) for p in pairs] == [("a", ["one"], True, 1), ("b", ["two"], True, 2)]


def test_parquet_output_loads_in_hugging_face_datasets_as_images(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = sample_pairs(2)
    on_disk = tmp_path / "pic.jpg"
    noise_image(7).save(on_disk)
    pairs.append(Pair("on-disk", str(on_disk), texts=["a file"]))  # an untouched image travels as its path
    open_writer("parquet", tmp_path / "data").write("part-00000", pairs)
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train")
    assert isinstance(loaded.features["image"], datasets.Image)  # no cast: the file says so
    assert [row["image"].size for row in loaded] == [(96, 80), (96, 80), (96, 80)]
    assert loaded["caption"][:2] == ["caption 0", "caption 1"] and loaded["image_id"][2] == "on-disk"
    back = read_all(tmp_path / "data")  # and recaption reads the Image struct back
    assert back[0].image == pairs[0].image and back[2].image == str(on_disk)


def test_parquet_output_is_typed_and_its_shards_share_one_schema(tmp_path):
    datasets = pytest.importorskip("datasets")
    first, second = sample_pairs(2), sample_pairs(3)[2:]
    first[0].meta["license"] = "cc-by"  # a key only the first shard has
    second[0].meta["quality_score"] = "high"  # a kind the first shard does not have: JSON
    second[0].scores["faces"] = 2  # a score only the second shard has
    writer = open_writer("parquet", tmp_path / "data")
    writer.write("part-00000", first)
    writer.write("part-00001", second)
    assert writer.finish_dataset() == []
    written = {f: f.stat().st_mtime_ns for f in (tmp_path / "data").glob("*.parquet")}
    writer.finish_dataset()
    assert written == {f: f.stat().st_mtime_ns for f in (tmp_path / "data").glob("*.parquet")}  # once agreed, left alone
    schemas = {pq.read_schema(f).remove_metadata() for f in (tmp_path / "data").glob("*.parquet")}
    assert len(schemas) == 1
    (schema,) = schemas
    assert schema.field("scores").type.field("faces").type == pa.int64()
    assert pa.types.is_list(schema.field("captions").type) and schema.field("captions").type.value_type.field("selected").type == pa.bool_()
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"), split="train")
    assert loaded[2]["scores"]["faces"] == 2 and loaded[0]["scores"]["faces"] is None
    assert loaded[0]["captions"][0]["text"] == "caption 0" and loaded[0]["meta"]["license"] == "cc-by"
    back = read_all(tmp_path / "data")
    assert [p.meta for p in back] == [p.meta for p in first + second]  # the JSON-stored value too
    assert [p.scores for p in back] == [p.scores for p in first + second]
    assert [[vars(c) for c in p.captions] for p in back] == [[vars(c) for c in p.captions] for p in first + second]


def test_embed_images_makes_a_parquet_dataset_that_travels_alone(tmp_path):
    datasets = pytest.importorskip("datasets")
    from recaption.cli import main

    (tmp_path / "in" / "images").mkdir(parents=True)
    for i in range(3):
        noise_image(i).save(tmp_path / "in" / "images" / f"{i}.png")
    write_jsonl(tmp_path / "in" / "pairs.jsonl", [{"image_id": str(i), "image_path": f"images/{i}.png", "texts": [f"a photo of noise {i}"]} for i in range(3)])
    args = ["run", str(tmp_path / "in" / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "clean", "--no-progress", "--output-format", "parquet"]
    assert main([*args, "--embed-images"]) == 0
    for f in (tmp_path / "in" / "images").iterdir():
        f.unlink()  # the dataset no longer needs them
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    assert sorted(row["image"].size for row in loaded) == [(96, 80)] * 3
    assert all(isinstance(p.image, bytes) for p in read_all(tmp_path / "out" / "data"))
    assert main([*args[:-2], "--output-format", "jsonl", "--embed-images", "--overwrite"]) == 2  # not a Parquet output: said, not ignored
    assert (tmp_path / "out" / "report.html").exists()  # and said before --overwrite deleted anything


def test_parquet_shards_group_row_groups(tmp_path):
    pq.write_table(pa.table({"image_id": [str(i) for i in range(10)], "texts": [["x"]] * 10}), tmp_path / "d.parquet", row_group_size=2)
    reader = open_reader(tmp_path / "d.parquet", None, ReaderOptions(shard_size=4))
    plan = reader.plan()
    assert [s.spec["row_groups"] for s in plan] == [[0, 1], [2, 3], [4]]
    assert [p.image_id for p in reader.read(plan[1])] == ["4", "5", "6", "7"]


def test_image_folder_with_sidecars(tmp_path):
    (tmp_path / "sub").mkdir()
    noise_image(1).save(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("a caption", encoding="utf-8")
    noise_image(2).save(tmp_path / "sub" / "b.png")
    (tmp_path / "sub" / "b.json").write_text('{"caption": "from json", "source": "web"}')
    noise_image(3).save(tmp_path / "c.webp")
    pairs = read_all(tmp_path)
    assert [(p.image_id, p.texts) for p in pairs] == [("a", ["a caption"]), ("c", []), ("sub/b", ["from json"])]
    assert pairs[2].meta["source"] == "web"


def test_img2dataset_output_includes_failed_downloads(tmp_path):
    out = tmp_path / "i2d"
    out.mkdir()
    img = encode(noise_image(1))
    make_tar(out / "00000.tar", [
        ("000000000.jpg", img), ("000000000.txt", b"a dog"),
        ("000000000.json", b'{"key": "000000000", "caption": "a dog", "url": "http://a", "status": "success"}'),
    ])
    pq.write_table(pa.table({
        "key": ["000000000", "000000001"], "caption": ["a dog", "a cat"], "url": ["http://a", "http://b"],
        "status": ["success", "failed_to_download"], "error_message": [None, "HTTP 404"], "license": ["cc0", "cc-by"],
    }), out / "00000.parquet")
    (out / "00000_stats.json").write_text(json.dumps({"count": 2, "successes": 1}))
    assert detect_format(out) == "img2dataset"
    pairs = read_all(out)
    assert [(p.image_id, p.reject.reason if p.reject else None) for p in pairs] == [("000000000", None), ("000000001", "download_failed")]
    assert "HTTP 404" in pairs[1].reject.detail and pairs[1].texts == ["a cat"]
    assert (pairs[1].meta["url"], pairs[1].meta["license"]) == ("http://b", "cc-by")  # kept for a retry list
    # A damaged listing costs the failed-download accounting, said as a reject; the samples read.
    (out / "00000.parquet").write_bytes(b"PAR1 not really")
    pairs = read_all(out)
    assert [(p.image_id, p.reject.reason if p.reject else None) for p in pairs] == [("000000000", None), ("00000:listing", "corrupt_listing")]


def test_img2dataset_parquet_output_is_detected_and_failed_downloads_say_so(tmp_path):
    out = tmp_path / "i2d"
    out.mkdir()
    img = encode(noise_image(1))
    # What img2dataset's ParquetSampleWriter writes: every sample tried, the bytes under the encode format.
    pq.write_table(pa.table({
        "url": ["http://a", "http://b"], "caption": ["a dog", "a cat"], "license": ["cc0", "cc-by"],
        "key": ["000000000", "000000001"], "status": ["success", "failed_to_download"], "error_message": [None, "HTTP 404"],
        "width": [96, None], "height": [80, None], "txt": ["a dog", None], "jpg": [img, None],
    }), out / "00000.parquet")
    (out / "00000_stats.json").write_text(json.dumps({"count": 2, "successes": 1}))
    assert detect_format(out) == "img2dataset"
    ok, failed = read_all(out)
    assert (ok.image_id, ok.reject, ok.image, ok.image_ext, ok.texts, ok.meta["license"]) == ("000000000", None, img, "jpg", ["a dog"], "cc0")
    assert (failed.image_id, failed.reject.key, failed.texts) == ("000000001", "read/download_failed", ["a cat"])
    assert "HTTP 404" in failed.reject.detail and (failed.meta["url"], failed.meta["license"]) == ("http://b", "cc-by")
    assert open_reader(out, None, ReaderOptions()).output_format == "parquet"


def test_format_detection_and_clear_errors(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [])
    assert detect_format(tmp_path / "a.jsonl") == "jsonl"
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(InputError, match="--format"):
        detect_format(tmp_path / "x.csv")
    with pytest.raises(InputError, match="does not exist"):
        detect_format(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        open_reader(empty, None, ReaderOptions()).plan()


def test_a_runs_own_rejects_and_work_folders_are_never_input(tmp_path):
    for folder in ("data", "rejects", "_work"):
        (tmp_path / folder).mkdir()
        write_jsonl(tmp_path / folder / "part-00000.jsonl", [{"image_id": folder, "texts": ["x"]}])
    assert [p.image_id for p in read_all(tmp_path, "jsonl")] == ["data"]


def test_output_keys_keep_safe_ids_and_stay_unique():
    from recaption.io.base import safe_key

    used: set[str] = set()
    keys = [safe_key(i, row, used) for row, i in enumerate(["000000123", "a/b.jpg", "000000123", "", "000004", "../x"])]
    assert keys == ["000000123", "000001_a_b_jpg", "000002_000000123", "000003", "000004", "000005_x"]
    assert len(set(keys)) == len(keys)
    assert all("/" not in k and "." not in k for k in keys)


def test_hugging_face_imagefolder_metadata_gives_the_captions(tmp_path):
    (tmp_path / "train" / "cats").mkdir(parents=True)
    noise_image(1).save(tmp_path / "train" / "a.jpg")
    noise_image(2).save(tmp_path / "train" / "cats" / "b.png")
    noise_image(3).save(tmp_path / "train" / "c.jpg")
    write_jsonl(tmp_path / "train" / "metadata.jsonl", [
        {"file_name": "a.jpg", "text": "a red car", "license": "cc-by"},
        {"file_name": "cats/b.png", "text": "a tabby cat"},
        '{"file_name": "c.jpg", "text": ',  # a broken line: a reject of its own
        {"file_name": "gone.jpg", "text": "never downloaded"},  # names no image: a reject, nothing lost
        {"text": "no file name"},
    ])
    assert detect_format(tmp_path) == "imagefolder"  # metadata.jsonl beside images is not a JSONL input
    pairs = read_all(tmp_path)
    kept = {p.image_id: p for p in pairs if p.reject is None}
    assert (kept["train/a"].texts, kept["train/cats/b"].texts, kept["train/c"].texts) == (["a red car"], ["a tabby cat"], [])
    assert kept["train/a"].meta["license"] == "cc-by"
    assert sorted(p.reject.reason for p in pairs if p.reject) == ["malformed_json", "missing_field", "missing_file"]
    # The CSV form, as diffusers' examples write it.
    csv_root = tmp_path / "csv"
    csv_root.mkdir()
    noise_image(4).save(csv_root / "d.jpg")
    (csv_root / "metadata.csv").write_text('file_name,text\nd.jpg,"a boat, at dusk"\n', encoding="utf-8")
    assert [(p.image_id, p.texts) for p in read_all(csv_root)] == [("d", ["a boat, at dusk"])]


def test_metadata_rows_that_name_one_image_twice_are_each_accounted(tmp_path):
    """img0.jpg twice, ./img1.jpg then img1.jpg: the first row of each is the image's row, the
    later one a reject read/duplicate_file_name naming the row kept and carrying its caption."""
    for i in range(2):
        noise_image(i).save(tmp_path / f"img{i}.jpg")
    write_jsonl(tmp_path / "metadata.jsonl", [
        {"file_name": "img0.jpg", "text": "a red car"},
        {"file_name": "img0.jpg", "text": "a blue car"},
        {"file_name": "./img1.jpg", "text": "a green boat"},
        {"file_name": "img1.jpg", "text": "a white boat"},
    ])
    pairs = read_all(tmp_path)
    kept = {p.image_id: p.texts for p in pairs if p.reject is None}
    assert kept == {"img0": ["a red car"], "img1": ["a green boat"]}
    dropped = [p for p in pairs if p.reject]
    assert [p.reject.reason for p in dropped] == ["duplicate_file_name", "duplicate_file_name"]
    assert [p.texts for p in dropped] == [["a blue car"], ["a white boat"]]
    assert "metadata.jsonl line 1 gave that image its row" in dropped[0].reject.detail
    assert "metadata.jsonl line 3" in dropped[1].reject.detail


def test_imagefolder_output_loads_in_hugging_face_datasets_with_its_captions(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = sample_pairs()
    writer = open_writer("imagefolder", tmp_path / "data")
    writer.write("part-00000", pairs[:2])
    writer.write("part-00001", pairs[2:])
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "data"), split="train")
    assert "label" not in loaded.column_names  # shard folders are no classes
    assert sorted(loaded["text"]) == ["caption 0", "caption 1", "caption 2"]
    assert sorted(loaded["image_id"]) == ["id/0", "id/1", "id/2"]
    assert loaded[0]["image"].size == (96, 80)
    # and recaption reads its own output back, sidecars first
    assert sorted(p.image_id for p in read_all(tmp_path / "data")) == ["id/0", "id/1", "id/2"]


def test_a_path_only_image_struct_under_a_renamed_column_reads_like_the_default(tmp_path):
    noise_image(1).save(tmp_path / "a.jpg")
    table = pa.table({"key": ["a"], "img": [{"bytes": None, "path": "a.jpg"}], "caption": ["a red car"]})
    pq.write_table(table, tmp_path / "d.parquet")
    (pair,) = read_all(tmp_path / "d.parquet", image_field="img")
    assert pair.reject is None and pair.image == str(tmp_path / "a.jpg") and pair.texts == ["a red car"]


def test_a_huge_field_in_metadata_csv_costs_its_row_not_the_file(tmp_path):
    """A 100 MB field once made the whole metadata.csv a reject, and every image lost its caption."""
    for i in range(3):
        noise_image(i).save(tmp_path / f"i{i}.jpg")
    with open(tmp_path / "metadata.csv", "w", encoding="utf-8", newline="") as fh:
        fh.write('file_name,text\ni0.jpg,"a red car, parked"\n')
        fh.write('i1.jpg,"' + "x" * (100 << 20) + '"\n')
        fh.write('i2.jpg,"a boat\non two lines"\n')
    pairs = read_all(tmp_path)
    kept = {p.image_id: p.texts for p in pairs if p.reject is None}
    assert kept == {"i0": ["a red car, parked"], "i1": [], "i2": ["a boat\non two lines"]}
    assert [(p.reject.reason, p.origin.get("line")) for p in pairs if p.reject] == [("record_too_large", 3)]
