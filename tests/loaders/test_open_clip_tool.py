"""open_clip's own training data code (open_clip_train.data.get_wds_dataset on `export --to
open_clip`, CsvDataset on `--to open_clip_csv`), and webdataset's own loader on a run's webdataset output, each in .venv-openclip
(open_clip needs torchvision; its own environment keeps that out of the project's)."""

import json
import subprocess

from recaption.cli import main
from tests.conftest import noise_image, write_jsonl
from tests.tool_envs import tool

SCRIPT = r"""
import argparse, glob, json, sys
import open_clip, webdataset as wds
import torchvision.transforms as T
from open_clip_train.data import get_wds_dataset

export, run_data = sys.argv[1], sys.argv[2]
shards = sorted(glob.glob(export + "/*.tar"))
args = argparse.Namespace(train_data=f"{export}/{{00000..{len(shards) - 1:05d}}}.tar", train_num_samples=None,
                          train_data_upsampling_factors=None, dataset_resampled=False, seed=0, batch_size=2, workers=0, world_size=1)
data = get_wds_dataset(args, T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]), is_train=True, epoch=0,
                       tokenizer=open_clip.get_tokenizer("RN50"))
out = {"num_samples": data.dataloader.num_samples, "batches": [[list(i.shape), list(t.shape)] for i, t in data.dataloader]}
run = wds.WebDataset(sorted(glob.glob(run_data + "/*.tar")), shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "txt", "json", "cls")
out["run"] = [[key, list(image.size), text, record["image_id"], label] for key, image, text, record, label in run]
from open_clip_train.data import CsvDataset
csv_data = CsvDataset(sys.argv[3], T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()]), "filepath", "title", sep="\t",
                      tokenizer=open_clip.get_tokenizer("RN50"))
out["csv"] = [len(csv_data), list(csv_data[0][0].shape), list(csv_data[0][1].shape)]
out["versions"] = [open_clip.__version__, wds.__version__ if hasattr(wds, "__version__") else "?"]
print(json.dumps(out))
"""


def test_open_clip_trains_from_the_export_and_webdataset_reads_the_run(tmp_path):
    python = tool(".venv-openclip", "python")
    (tmp_path / "in" / "images").mkdir(parents=True)
    for i in range(4):
        noise_image(i, size=(128, 96)).save(tmp_path / "in" / "images" / f"{i}.jpg")
    write_jsonl(tmp_path / "in" / "pairs.jsonl", [{"image_id": f"p{i}", "image_path": f"images/{i}.jpg", "texts": [f"a photo of noise {i}"]} for i in range(4)])
    assert main(["run", str(tmp_path / "in" / "pairs.jsonl"), str(tmp_path / "jsonl-out"), "--recipe", "clean", "--no-progress"]) == 0
    assert main(["export", str(tmp_path / "jsonl-out"), str(tmp_path / "export"), "--to", "open_clip", "--shard-size", "2"]) == 0
    assert main(["export", str(tmp_path / "jsonl-out"), str(tmp_path / "csv"), "--to", "open_clip_csv"]) == 0
    # A webdataset run whose samples carry a member no stage reads (KEY.cls).
    assert main(["run", str(tmp_path / "export"), str(tmp_path / "wds-in"), "--recipe", "clean", "--no-progress", "--format", "webdataset"]) == 0
    import tarfile  # noqa: PLC0415

    with tarfile.open(tmp_path / "wds-in" / "data" / "part-00000.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(tmp_path / "labelled.tar", "w") as tar:
        for member, data in members:
            tar.addfile(member, __import__("io").BytesIO(data))
            if member.name.endswith(".txt"):
                label = tarfile.TarInfo(member.name[:-4] + ".cls")
                label.size = 1
                tar.addfile(label, __import__("io").BytesIO(b"7"))
    (tmp_path / "labelled").mkdir()
    (tmp_path / "labelled.tar").rename(tmp_path / "labelled" / "00000.tar")
    assert main(["run", str(tmp_path / "labelled"), str(tmp_path / "run"), "--recipe", "clean", "--no-progress"]) == 0
    done = subprocess.run([str(python), "-c", SCRIPT, str(tmp_path / "export"), str(tmp_path / "run" / "data"), str(tmp_path / "csv" / "train.csv")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["num_samples"] == 4  # from the export's sizes.json: no --train-num-samples
    assert result["batches"] == [[[2, 3, 32, 32], [2, 77]]] * 2
    assert result["csv"] == [4, [3, 32, 32], [77]]  # open_clip's --dataset-type csv
    assert sorted(r[3] for r in result["run"]) == ["p0", "p1"] and all(r[1] == [128, 96] and r[4] == 7 for r in result["run"])
