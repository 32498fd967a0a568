"""The review server and the Label Studio import under hostile requests and files."""

import http.client
import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from recaption.cli import main
from recaption.review.session import ReviewSession
from tests.review.test_labelstudio import annotation
from tests.review.test_server import burst, call, dataset, serve  # noqa: F401 - the fixture


def raw_request(server, data: bytes) -> bytes:
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_only_requests_that_name_this_server_are_answered(dataset):  # noqa: F811 - the fixture
    server = serve(dataset)
    try:
        host, port = server.httpd.server_address[:2]
        for name in (f"127.0.0.1:{port}", f"localhost:{port}"):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", "/api/state", headers={"Host": name})
            assert conn.getresponse().status == 200
        # DNS rebinding: a page from evil.example whose name now points at 127.0.0.1.
        for name in (f"evil.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", ""):
            for method, path, body in (("GET", "/api/state", None), ("GET", "/image/1", None), ("POST", "/api/decision", b"{}")):
                conn = http.client.HTTPConnection(host, port, timeout=10)
                conn.putrequest(method, path, skip_host=True)
                conn.putheader("Host", name)
                if body:
                    conn.putheader("Content-Type", "application/json")
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                response = conn.getresponse()
                assert response.status == 421, (name, path)
                assert b"img-" not in response.read()
    finally:
        server.stop()


def test_malformed_requests_get_400_not_a_traceback(dataset, capsys):  # noqa: F811
    server = serve(dataset)
    try:
        host, port = server.httpd.server_address[:2]
        head = f"POST /api/decision HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n".encode()
        for request in (
            head + b"Content-Length: abc\r\n\r\n{}",
            head + b"Content-Length: -5\r\n\r\n",
            head + b"Content-Length: 100001\r\n\r\n" + b"[" * 100000 + b"]",
            head + b'Content-Length: 67\r\n\r\n{"image_id": "img-1", "action": "accept", "caption_index": ' + str(10**30).encode() + b"}",
            head + b'Content-Length: 51\r\n\r\n{"image_id": "img-1", "action": "accept", "text": 5}',
            f"GET /api/state?reviewer=%ff%fe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode(),
            b"GET /\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() + b"\r\nConnection: close\r\n\r\n",
        ):
            answer = raw_request(server, request if b"Connection: close" in request else request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
            status = int(answer.split(b" ", 2)[1])
            assert status in (200, 400, 404), answer[:200]
            if b"POST" in request[:4]:
                assert status == 400, (request[:120], answer[:300])
        assert "Traceback" not in capsys.readouterr().err
        # The server still answers, and stored nothing from those.
        assert call(server.url + "api/state")[0] == 200
        assert ReviewSession.open(dataset).store.current(1) == {}
    finally:
        server.stop()


def test_recorded_image_roots_outside_the_dataset_are_not_served(dataset, tmp_path):  # noqa: F811
    (dataset.parent / "sample.json").write_text(json.dumps({"image_roots": ["/"]}))
    session = ReviewSession.open(dataset)
    assert session.refused_roots == [Path("/")]
    server = serve(dataset)
    try:
        state = json.loads(call(server.url + "api/state")[2])
        # Its path leads outside the dataset's tree: the reader refuses it (read/outside_input), so
        # it is not offered for review at all; were it offered, the server would not serve it.
        escapes = [k for k, item in enumerate(state["items"]) if item["image_id"] == "escape"]
        assert all(call(server.url + f"image/{k}")[0] == 404 for k in escapes)
        assert call(server.url + "image/1")[0] == 200  # inside: served
    finally:
        server.stop()
    # A file named .jpg that is not an image is not served either.
    (dataset.parent / "images" / "1.jpg").write_text("password=hunter2")
    assert ReviewSession.open(dataset).image_bytes(1) is None


def test_a_held_store_lock_answers_busy_in_seconds(dataset):  # noqa: F811
    server = serve(dataset)
    blocker = sqlite3.connect(server.session.store.path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        start = time.perf_counter()
        status, _, body = call(server.url + "api/decision", {"image_id": "img-1", "action": "accept", "caption_index": 0, "text": "a red car 1"},
                               {"Origin": server.url.rstrip("/")})
        assert status == 503 and b"busy" in body
        assert time.perf_counter() - start < 15
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        server.stop()


def test_an_idle_connection_is_closed(dataset, monkeypatch):  # noqa: F811
    from recaption.review import server as server_module

    monkeypatch.setattr(server_module, "IDLE_SECONDS", 1)
    server = serve(dataset)
    try:
        host, port = server.httpd.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # and then nothing more
            start = time.perf_counter()
            assert sock.recv(100) == b""  # closed by the server
            assert time.perf_counter() - start < 8
    finally:
        server.stop()


def _export(tasks, tmp_path, name="export.json"):
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


MALFORMED = [
    {"not": "a list"},
    [1, 2, 3],
    [{"data": "x"}],
    [{"data": {"image_id": "img-1"}, "annotations": "x"}],
    [{"data": {"image_id": "img-1"}, "annotations": [5]}],
    [{"data": {"image_id": "img-1"}, "annotations": [{"result": "x"}]}],
    [{"data": {"image_id": "img-1"}, "annotations": [{"result": [5, {"from_name": "decision", "value": "accept"}]}]}],
    [{"data": {"image_id": "img-1"}, "annotations": [{"result": [{"from_name": "decision", "value": {"choices": [5]}}]}]}],
    [{"data": {"image_id": ["x"]}, "annotations": []}],
    [{"data": {"image_id": "img-1"}, "annotations": [{"completed_by": [1], "result": [{"from_name": "decision", "value": {"choices": ["reject"]}}]}]}],
    [{"data": {"image_id": "img-1"}, "annotations": [annotation(1, 3, "edit", caption="x" * 30000)]}],
]


@pytest.mark.parametrize("tasks", MALFORMED)
def test_malformed_label_studio_exports_never_traceback(dataset, tmp_path, tasks, capsys):  # noqa: F811
    rc = main(["review", "labelstudio", "import", str(dataset), str(_export(tasks, tmp_path))])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert rc in (0, 1, 2)
    if rc:
        assert err.startswith("recaption: ")


def test_import_is_atomic_idempotent_and_reads_json_min(dataset, tmp_path, capsys):  # noqa: F811
    good = [{"id": 1, "data": {"image_id": "img-1"}, "annotations": [annotation(1, 3, "edit", caption="a photo of a shiny red car 1")]},
            {"id": 2, "data": {"image_id": "img-2"}, "annotations": [annotation(2, 3, "reject", reason="blurred")]}]
    assert main(["review", "labelstudio", "import", str(dataset), str(_export(good, tmp_path))]) == 0
    assert "2 decisions imported" in capsys.readouterr().out
    assert main(["review", "labelstudio", "import", str(dataset), str(_export(good, tmp_path))]) == 0  # again
    assert "0 decisions imported" in capsys.readouterr().out and len(ReviewSession.open(dataset).store.current(1)) == 2

    # One bad decision in an export: none of it is stored.
    bad = good + [{"id": 3, "data": {"image_id": "img-3"}, "annotations": [annotation(3, 3, "accept", caption="a red car 3")]}]
    bad[0] = {"id": 1, "data": {"image_id": "img-1"}, "annotations": [annotation(1, 4, "reject", reason="")]}
    store = ReviewSession.open(dataset).store
    real = store.add_many.__func__

    def fails_late(self, round_, rows):  # a crash after the first rows were handed over
        return real(self, round_, rows[:1] + [("img-3", "x", "nonsense", None, "", "")])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(store), "add_many", fails_late)
        rc = main(["review", "labelstudio", "import", str(dataset), str(_export(bad, tmp_path))])
    assert rc == 2 and len(ReviewSession.open(dataset).store.current(1)) == 2  # nothing of it stored

    # JSON_MIN: one flat row per annotation, the task's data fields beside.
    json_min = [{"id": 4, "image": "", "image_id": "img-3", "decision": "accept", "caption": "a red car 3", "annotator": "ann@example.com",
                 "annotation_id": 9, "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:00Z", "lead_time": 3.1}]
    assert main(["review", "labelstudio", "import", str(dataset), str(_export(json_min, tmp_path, "min.json"))]) == 0
    current = ReviewSession.open(dataset).store.current(1)
    assert current[("img-3", "labelstudio:ann@example.com")].action == "accept"

    # An export that holds no decision on this dataset is an error, not a silent 0.
    assert main(["review", "labelstudio", "import", str(dataset), str(_export([{"id": 1, "data": {"image_id": "other"}}], tmp_path, "none.json"))]) == 1
    assert "holds no decision" in capsys.readouterr().err


def test_two_hundred_requests_at_once_are_all_answered_promptly(dataset):  # noqa: F811
    """The listen backlog was http.server's 5: connections past it waited on the kernel's SYN
    retries (1, 3, 7 s): the slowest of 200 took 14.8 s on one machine, 1.04 s on another, and
    0.1 s with the backlog raised. Bounded here, not timed closely (bench_hostile times it)."""
    server = serve(dataset)
    assert server.httpd.request_queue_size >= 200  # the burst fits the backlog
    try:
        times = burst([server.url + ("api/state" if k % 2 else f"image/{k % 4}") for k in range(200)])
    finally:
        server.stop()
    assert max(times) < 5.0, f"slowest {max(times):.1f} s"
