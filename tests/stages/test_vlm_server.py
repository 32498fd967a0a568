"""vlm_caption's ``openai`` backend against a stub OpenAI-compatible server on 127.0.0.1.

The stub answers ``/v1/models`` and ``/v1/chat/completions`` the way vLLM's server does, and
can be told to fail: rate limits, server errors, timeouts, a refused key, one refused image.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recaption.record import Pair
from recaption.stages.base import StageError, SystematicFailure
from tests.conftest import encode, noise_image


class Stub:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail: list[int] = []  # statuses to answer, one per request, before answering normally
        self.always: int | None = None  # a status for every completion request
        self.refuse_image_bytes: int | None = None  # 400 for images of this many bytes
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.models = ["tiny-vlm"]
        # A hostile server: "redirect" (302 to ``redirect_to``), "trickle" (a body a byte every
        # 0.2 s), "huge" (a body of ``huge_bytes``), or "choices" (answers ``choices`` as sent).
        self.hostile: str | None = None
        self.redirect_to = ""
        self.huge_bytes = 0
        self.choices: list = []


def serve(stub: Stub) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            with stub.lock:
                stub.headers.append(dict(self.headers))
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stub.models]})
            else:
                self._send(404, {"error": {"message": "no such route"}})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                stub.requests.append(body)
                stub.headers.append(dict(self.headers))
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                status = stub.fail.pop(0) if stub.fail else stub.always
            try:
                time.sleep(stub.delay)
                if stub.hostile and self._hostile(body):
                    return
                if status:
                    self._send(status, {"error": {"message": f"stub says {status}"}}, {"Retry-After": "0"} if status == 429 else None)
                    return
                uri = body["messages"][0]["content"][0]["image_url"]["url"]
                image = base64.b64decode(uri.split(",", 1)[1])
                if stub.refuse_image_bytes is not None and len(image) == stub.refuse_image_bytes:
                    self._send(400, {"error": {"message": "image too large"}})
                    return
                texts = [f"The image shows a red car number {body['seed'] % 100} ({k})." for k in range(body["n"])]
                self._send(200, {"choices": [{"index": k, "message": {"role": "assistant", "content": t}} for k, t in enumerate(texts)]})
            finally:
                with stub.lock:
                    stub.in_flight -= 1

        def _hostile(self, body: dict) -> bool:
            if stub.hostile == "redirect":
                self.send_response(302)
                self.send_header("Location", stub.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif stub.hostile == "trickle":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    for _ in range(100):  # bounded: 20 s at most, the test's client gives up long before
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass
            elif stub.hostile == "huge":
                self.send_response(200)
                self.send_header("Content-Length", str(stub.huge_bytes))
                self.end_headers()
                block = b" " * (1 << 20)
                try:
                    for _ in range(stub.huge_bytes >> 20):
                        self.wfile.write(block)
                except OSError:
                    pass
            elif stub.hostile == "choices":
                self._send(200, {"choices": stub.choices})
            else:
                return False
            return True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture
def stub():
    state = Stub()
    server, url = serve(state)
    state.url = url
    yield state
    server.shutdown()
    server.server_close()


def stage(stub, **kw):
    from recaption.stages.caption import VlmCaption

    options = dict(model="tiny-vlm", backend="openai", base_url=stub.url, template="plain", names=False, max_retries=2, request_timeout=5.0)
    return VlmCaption(**{**options, **kw})


def pairs(n, size=(64, 48)):
    return [Pair(f"p{i}", encode(noise_image(i, size)), texts=["a red car"]) for i in range(n)]


def test_each_image_is_one_request_with_the_stages_sampling_and_a_seed_of_its_own(stub, monkeypatch):
    monkeypatch.setenv("RECAPTION_TEST_KEY", "sk-test")
    batch = pairs(4)
    stage(stub, n=2, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=5, api_key_env="RECAPTION_TEST_KEY")(batch)
    assert len(stub.requests) == 4
    first = stub.requests[0]
    assert (first["model"], first["n"], first["temperature"], first["top_p"], first["max_tokens"]) == ("tiny-vlm", 2, 0.7, 0.9, 12)
    assert first["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert "Describe" in first["messages"][0]["content"][1]["text"] or first["messages"][0]["content"][1]["text"]
    assert {h.get("Authorization") for h in stub.headers} == {"Bearer sk-test"}  # from the environment, never the recipe
    seeds = [r["seed"] for r in stub.requests]
    assert len(set(seeds)) == 4  # four images, four random streams
    for pair in batch:
        made = [c for c in pair.captions if c.source == "vlm:tiny-vlm"]
        assert len(made) == 2 and pair.scores["vlm_candidates"] == 2
        assert made[0].text.startswith("a photo of a red car")  # tidied like any other backend's answer
        assert made[0].params["backend"] == "openai" and made[0].model_hash == f"openai:tiny-vlm@{stub.url}"
    # The same image gets the same seed in another batch and another order: reproducible.
    again = Stub()
    server, url = serve(again)
    try:
        again.url = url
        stage(again, n=2, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=5)(list(reversed(pairs(4))))
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(r["seed"] for r in again.requests) == sorted(seeds)


def test_requests_run_concurrently_up_to_the_bound(stub):
    stub.delay = 0.2  # each request is held long enough for the others to arrive
    stage(stub, concurrency=4, batch_size=8)(pairs(8))
    assert stub.max_in_flight == 4  # four at once, never more (no wall-clock bound: these machines are shared)


def test_rate_limits_and_server_errors_are_retried(stub):
    stub.fail = [429, 503]
    batch = pairs(1)
    stage(stub)(batch)
    assert len(stub.requests) == 3 and batch[0].reject is None and batch[0].scores["vlm_candidates"] == 1


def test_a_server_that_keeps_failing_stops_the_run_in_one_line(stub):
    stub.always = 500
    with pytest.raises(SystematicFailure, match="did not answer after 2 attempts"):
        stage(stub, max_retries=1)(pairs(3))
    assert len(stub.requests) <= 2 * 3


def test_a_refused_key_stops_the_run(stub):
    stub.always = 401
    with pytest.raises(SystematicFailure, match="refused the API key"):
        stage(stub)(pairs(2))


def test_one_refused_image_is_that_records_reject(stub):
    batch = pairs(3)
    stub.refuse_image_bytes = None
    from recaption.imaging import load_rgb
    from recaption.models.openai_server import data_uri

    data = base64.b64decode(data_uri(load_rgb(batch[1].image, 224)).split(",", 1)[1])
    stub.refuse_image_bytes = len(data)
    stage(stub)(batch)
    assert batch[1].reject.key == "vlm_caption/refused_by_server" and "image too large" in batch[1].reject.detail
    assert batch[0].reject is None and batch[2].reject is None


def test_a_timeout_is_retried_then_stops_the_run(stub):
    stub.delay = 1.0
    with pytest.raises(SystematicFailure, match="did not answer after 2 attempts"):
        stage(stub, request_timeout=0.2, max_retries=1)(pairs(1))


def test_setup_names_what_is_wrong_with_the_server(stub):
    with pytest.raises(StageError, match="does not serve 'other-model'; it serves: tiny-vlm"):
        stage(stub, model="other-model")(pairs(1))
    with pytest.raises(StageError, match="needs base_url"):
        stage(stub, base_url="")(pairs(1))
    stub_url = stub.url.replace(stub.url.split(":")[-1].split("/")[0], "1")  # port 1: nothing listens
    with pytest.raises(StageError, match="did not answer after 1 attempt "):
        stage(stub, base_url=stub_url, max_retries=0)(pairs(1))


def test_the_cli_runs_a_recipe_against_the_server(stub, tiny_clip, tmp_path):
    from recaption.cli import main
    from tests.conftest import image_pairs

    image_pairs(tmp_path, [["a red car"], ["IMG_1.jpg"]], size=(96, 96))
    settings = ["vlm_caption.backend=openai", f"vlm_caption.base_url={stub.url}", "vlm_caption.model=tiny-vlm",
                f"clip_score.model={tiny_clip}", "clip_score.cache=none"]
    args = ["run", str(tmp_path / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "llava", "--workers", "1", "--no-progress"]
    assert main(args + [x for s in settings for x in ("--set", s)]) == 0
    rows = [json.loads(line) for f in sorted((tmp_path / "out" / "data").glob("*.jsonl")) for line in open(f)]
    assert len(rows) == 2 and len(stub.requests) == 2
    assert all(any(c["source"] == "vlm:tiny-vlm" and c["params"]["backend"] == "openai" for c in r["captions"]) for r in rows)


# --- a hostile server (issue: trust, part 2) -----------------------------------------------


def test_a_redirect_is_never_followed_and_the_key_stays_on_its_host(stub, monkeypatch):
    """A 302 from 127.0.0.1 to localhost (another host by name): nothing is sent there."""
    monkeypatch.setenv("RECAPTION_TEST_KEY", "sk-secret-key")
    elsewhere = Stub()
    server, url = serve(elsewhere)
    try:
        stub.hostile = "redirect"
        stub.redirect_to = url.replace("127.0.0.1", "localhost") + "/chat/completions"
        with pytest.raises(SystematicFailure, match="follows no redirect"):
            stage(stub, api_key_env="RECAPTION_TEST_KEY", max_retries=0)(pairs(2))
        assert elsewhere.requests == [] and elsewhere.headers == []  # neither the POST nor a GET replay
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickled_body_cannot_hold_the_run_past_its_deadline(stub):
    stub.hostile = "trickle"
    start = time.perf_counter()
    with pytest.raises(SystematicFailure, match="did not answer after 1 attempt"):
        stage(stub, request_timeout=1.0, max_retries=0)(pairs(1))
    assert time.perf_counter() - start < 6  # was: the whole 20 s body (and, unbounded, forever)


def test_a_huge_body_is_not_read_past_its_limit(stub):
    import resource

    stub.hostile = "huge"
    stub.huge_bytes = 200 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    batch = pairs(2)
    stage(stub, max_new_tokens=32, n=1)(batch)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert all(p.reject is not None and p.reject.key == "vlm_caption/refused_by_server" and "over" in p.reject.detail for p in batch)
    assert grown_mib < 100, f"a 200 MB answer grew the process by {grown_mib:.0f} MiB"


def test_what_a_server_answers_stays_within_what_our_readers_accept(stub):
    from recaption.limits import MAX_TEXT_CHARS

    stub.hostile = "choices"
    long_text = "a red car " * 3_000  # 30,000 characters: over the reader's 20,000
    stub.choices = [{"index": k, "message": {"content": long_text if k == 0 else f"a car {k}"}} for k in range(2000)]
    batch = pairs(1)
    stage(stub, n=1, max_new_tokens=8000)(batch)
    made = [c for c in batch[0].captions if c.source == "vlm:tiny-vlm"]
    assert len(made) == 1 and len(made[0].text) <= MAX_TEXT_CHARS and len(made[0].params.get("raw", "")) <= MAX_TEXT_CHARS
    # Zero choices: the pair keeps what it had, and says what is missing.
    stub.choices = []
    batch = pairs(1)
    stage(stub, n=2, temperature=0.7)(batch)
    assert batch[0].reject is None and batch[0].meta["vlm_candidates_missing"] == 2
    # Indexes of mixed types (and none): read in a stated order, never an error.
    stub.choices = [{"index": "b", "message": {"content": "a blue car"}}, {"index": 1, "message": {"content": "a green car"}},
                    {"message": {"content": "a red car"}}, {"index": 0, "message": {"content": "a white car"}}, {"index": None}]
    batch = pairs(1)
    stage(stub, n=3, temperature=0.7)(batch)
    made = [c.text for c in batch[0].captions if c.source == "vlm:tiny-vlm"]
    assert batch[0].reject is None and len(made) == 3
    assert "white car" in made[0] and "green car" in made[1] and "blue car" in made[2]


def test_a_server_answer_round_trips_through_our_reader(stub, tmp_path):
    """Too many choices, each over the reader's text limit, written and read back: no reject."""
    from recaption.io import open_reader
    from recaption.io.base import ReaderOptions
    from recaption.io.jsonl import JsonlWriter

    stub.hostile = "choices"
    stub.choices = [{"index": k, "message": {"content": "a red car " * 3_000}} for k in range(12)]
    batch = pairs(3)
    stage(stub, n=4, temperature=0.7, max_new_tokens=8000)(batch)
    JsonlWriter(tmp_path / "data").write("part-00000", batch)
    reader = open_reader(tmp_path / "data" / "part-00000.jsonl", None, ReaderOptions())
    back = [p for shard in reader.plan() for p in reader.pairs(shard)]
    assert [p.reject for p in back] == [None, None, None]
