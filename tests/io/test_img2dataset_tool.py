"""img2dataset for real: it downloads from a server on 127.0.0.1 into each of its output
formats, and recaption reads every result, accounting for every URL it was given."""

import json
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recaption.cli import main
from tests.conftest import noise_image
from tests.tool_envs import serve_folder, tool


@pytest.mark.parametrize("output_format", ["webdataset", "files", "parquet"])
def test_img2dataset_output_of_every_format_accounts_for_every_url(tmp_path, output_format):
    img2dataset = tool(".venv-img2dataset", "img2dataset")
    site = tmp_path / "site"
    site.mkdir()
    for i in range(5):
        noise_image(i, size=(128, 96)).save(site / f"{i}.jpg", quality=92)
    (site / "page.jpg").write_text("<html>not an image</html>")
    urls = [f"{i}.jpg" for i in range(5)] + ["missing.jpg", "page.jpg"]
    with serve_folder(site) as base:
        pq.write_table(pa.table({
            "url": [f"{base}/{u}" for u in urls],
            "caption": [f"a photo of noise {i}" for i in range(len(urls))],
            "license": [f"cc-{i}" for i in range(len(urls))],
        }), tmp_path / "urls.parquet")
        done = subprocess.run([
            str(img2dataset), "--url_list", str(tmp_path / "urls.parquet"), "--input_format", "parquet",
            "--url_col", "url", "--caption_col", "caption", "--save_additional_columns", '["license"]',
            "--output_format", output_format, "--output_folder", str(tmp_path / "i2d"), "--processes_count", "1",
            "--thread_count", "4", "--resize_mode", "no", "--enable_wandb", "False", "--distributor", "multiprocessing",
            "--retries", "0", "--timeout", "10",
        ], capture_output=True, text=True, timeout=300, env={"NO_ALBUMENTATIONS_UPDATE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert main(["run", str(tmp_path / "i2d"), str(tmp_path / "out"), "--recipe", "clean", "--no-progress"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["input"], stats["output"], stats["rejects_by_reason"]) == (7, 5, {"read/download_failed": 2})
    assert stats["input_format"] == "img2dataset" and stats["output_format"] == {"files": "imagefolder"}.get(output_format, output_format)
    rejects = [json.loads(line) for f in (tmp_path / "out" / "rejects").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(r["meta"]["url"].rsplit("/", 1)[1] for r in rejects) == ["missing.jpg", "page.jpg"]
    assert all(r["meta"]["license"].startswith("cc-") and r["texts"] for r in rejects)  # enough to retry from
