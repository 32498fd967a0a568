"""Label Studio for real: a server on 127.0.0.1 (its own environment, .venv-labelstudio), the
export pushed into it with a personal access token, every image served from the one document
root (the run's rewritten images too), annotations made through its API read back with the
reviewer's e-mail."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import pytest
from PIL import Image

from recaption.cli import main
from recaption.io import read_kept_pairs
from recaption.io.base import ReaderOptions
from tests.conftest import noise_image, write_jsonl
from tests.tool_envs import tool

EMAIL, LEGACY_TOKEN = "reviewer@example.com", "recaption-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    command = tool(".venv-labelstudio", "label-studio")
    root = tmp_path_factory.mktemp("ls-root")  # the one document root the exports go below
    data = tmp_path_factory.mktemp("ls-data")
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root),
           "COLLECT_ANALYTICS": "false", "LATEST_VERSION_CHECK": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
    log = open(data / "server.log", "w")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen([str(command), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data),
                               "--username", EMAIL, "--password", "recaption-pw-1", "--user-token", LEGACY_TOKEN, "--enable-legacy-api-token"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as res:
                    if res.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Label Studio did not start:\n" + (data / "server.log").read_text()[-3000:])
            time.sleep(1)
        yield url, root
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def api(url, path, body=None, token=LEGACY_TOKEN, scheme="Token"):
    request = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"{scheme} {token}", "Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=30) as res:
        return res.status, res.read()


def test_push_serve_annotate_and_import_with_a_real_label_studio(label_studio, tmp_path, capsys):
    url, root = label_studio
    # A run's output as a user would review it: one image the run rewrote (RGBA PNG -> JPEG bytes).
    (tmp_path / "in" / "images").mkdir(parents=True)
    for i in range(3):
        noise_image(i, size=(128, 96)).save(tmp_path / "in" / "images" / f"{i}.jpg")
    Image.new("RGBA", (128, 96), (200, 30, 30, 128)).save(tmp_path / "in" / "images" / "alpha.png")
    write_jsonl(tmp_path / "in" / "pairs.jsonl", [{"image_id": f"p{i}", "image_path": f"images/{i}.jpg", "texts": [f"a photo of noise {i}"]} for i in range(3)]
                + [{"image_id": "alpha", "image_path": "images/alpha.png", "texts": ["a red square"]}])
    assert main(["run", str(tmp_path / "in" / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "clean", "--no-progress"]) == 0
    export = root / "export"
    assert main(["review", "labelstudio", "export", str(tmp_path / "out"), str(export), "--document-root", str(root), "--image-root", str(tmp_path)]) == 0
    tasks = json.loads((export / "tasks.json").read_text())
    assert len(tasks) == 4 and all(t["data"]["image"].startswith("/data/local-files/?d=export/images/") for t in tasks)

    _, body = api(url, "/api/token/", {})  # a personal access token, Label Studio's default kind
    pat = json.loads(body)["token"]
    assert main(["review", "labelstudio", "push", str(export), "--url", url, "--token", pat, "--title", "recaption test"]) == 0
    project = int(re.search(r"project (\d+) with 4 tasks", capsys.readouterr().out).group(1))

    _, body = api(url, f"/api/tasks?project={project}&page_size=100")
    served = json.loads(body)["tasks"]
    for task in served:  # every image, the rewritten one too, from the one document root
        status, data = api(url, task["data"]["image"])
        name = task["data"]["image"].rsplit("/", 1)[1]
        assert status == 200 and data == (export / "images" / name).read_bytes()
    by_id = {t["data"]["image_id"]: t["id"] for t in served}
    edit = [{"from_name": "decision", "to_name": "image", "type": "choices", "value": {"choices": ["edit"]}},
            {"from_name": "caption", "to_name": "image", "type": "textarea", "value": {"text": ["a translucent red square"]}}]
    reject = [{"from_name": "decision", "to_name": "image", "type": "choices", "value": {"choices": ["reject"]}},
              {"from_name": "reject_reason", "to_name": "image", "type": "textarea", "value": {"text": ["just noise"]}}]
    api(url, f"/api/tasks/{by_id['alpha']}/annotations", {"result": edit})
    api(url, f"/api/tasks/{by_id['p0']}/annotations", {"result": reject})

    assert main(["review", "labelstudio", "import", str(tmp_path / "out"), "--url", url, "--project", str(project), "--token", pat]) == 0
    assert main(["review", "export", str(tmp_path / "out"), str(tmp_path / "reviewed")]) == 0
    pairs = {p.image_id: p for p in read_kept_pairs(tmp_path / "reviewed", None, ReaderOptions())[0]}
    (human,) = [c for c in pairs["alpha"].captions if c.source == "human"]
    assert (human.text, human.params["action"], human.params["reviewer"]) == ("a translucent red square", "edit", f"labelstudio:{EMAIL}")
    assert "p0" not in pairs and "just noise" in (tmp_path / "reviewed" / "rejects" / "part-00000.jsonl").read_text()


def test_a_wrong_token_or_address_is_one_clear_line(label_studio, tmp_path, capsys):
    url, root = label_studio
    (root / "empty").mkdir(exist_ok=True)
    assert main(["review", "labelstudio", "push", str(root / "empty"), "--url", url, "--token", "x"]) == 2
    assert "not a `recaption review labelstudio export` folder" in capsys.readouterr().err
    export = root / "export-2"
    export.mkdir()
    (export / "labelstudio.json").write_text(json.dumps({"image_prefix": "x", "document_root": str(root), "images": str(export)}))
    (export / "tasks.json").write_text("[]")
    (export / "config.xml").write_text("<View/>")
    assert main(["review", "labelstudio", "push", str(export), "--url", url, "--token", "not-a-token"]) == 1
    assert "refuses the token" in capsys.readouterr().err
    assert main(["review", "labelstudio", "push", str(export), "--url", f"http://127.0.0.1:{free_port()}", "--token", "t"]) == 1
    assert "cannot reach Label Studio" in capsys.readouterr().err
