"""The openai backend against a real `vllm serve` of a tiny model on 127.0.0.1, started here."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from recaption.record import Pair
from tests.conftest import encode
from tests.vllm.test_vllm_backend import IMAGES, same_answer

vllm = pytest.importorskip("vllm")

START_S = 240  # a cold start on two busy cores; it is usually under a minute


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(wide_vlms, tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("vllm-serve") / "server.log", "w")
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(wide_vlms["llava"]), "--served-model-name", "tiny-llava",
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "512",
        "--distributed-executor-backend", "uni", "--limit-mm-per-prompt", '{"image": 1}',
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}: see {log.name}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not answer within {START_S} s: see {log.name}")
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_the_openai_backend_gets_the_transformers_backends_greedy_answers_from_vllm_serve(server, wide_vlms):
    from recaption.models.captioner import Sampling
    from recaption.models.vlm import load_captioner
    from recaption.stages.caption import VlmCaption

    stage = VlmCaption(model="tiny-llava", backend="openai", base_url=server, template="plain", max_new_tokens=8, names=False, concurrency=3)
    batch = [Pair(f"p{i}", encode(image, "PNG"), texts=["a red car"]) for i, image in enumerate(IMAGES)]
    stage(batch)
    assert all(p.reject is None and p.scores["vlm_candidates"] == 1 for p in batch)
    reference = load_captioner(str(wide_vlms["llava"]), "transformers", "cpu", "float32")
    from recaption.text.prompts import render

    prompt = reference.format_prompt(render(stage.template, "", [], []))  # what the server's chat template made of it
    want = reference.generate(IMAGES, [prompt] * len(IMAGES), Sampling(max_new_tokens=8))
    for pair, expected in zip(batch, want):
        made = next(c for c in pair.captions if c.source == "vlm:tiny-llava")
        assert same_answer(made.params.get("raw", made.text).strip(), expected[0].strip()), (made, expected)


def test_sampled_candidates_from_the_server_reproduce_per_image(server):
    from recaption.stages.caption import VlmCaption

    def run(order):
        stage = VlmCaption(model="tiny-llava", backend="openai", base_url=server, template="plain", n=2, temperature=1.0, max_new_tokens=6, seed=11, names=False)
        batch = [Pair(f"p{i}", encode(IMAGES[i], "PNG"), texts=[""]) for i in order]
        stage(batch)
        return {p.image_id: [c.params.get("raw", c.text) for c in p.captions if c.source == "vlm:tiny-llava"] for p in batch}

    first = run([0, 1, 2])
    assert all(len(v) == 2 for v in first.values())
    assert run([2, 1, 0]) == first
