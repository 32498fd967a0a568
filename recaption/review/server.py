"""``recaption review DATASET``: the review page, served from this machine.

Plain ``http.server`` (threads), bound to 127.0.0.1 unless told otherwise. Routes:

- ``GET /`` the page, ``GET /app.js`` its script (no inline script: the Content-Security-
  Policy forbids it, so a caption can never run as code even if escaping failed);
- ``GET /api/state?reviewer=NAME`` the pairs, candidates and this reviewer's decisions;
- ``GET /image/N`` the image of the N-th pair, from inside the image roots only;
- ``POST /api/decision?reviewer=NAME`` a JSON decision, stored before the answer goes back.

Everything from the data reaches the page as JSON and is put on screen with ``textContent``.
A POST must be JSON from this page's own origin (a cross-site form can send neither).
Every request must name this server in its ``Host`` header (127.0.0.1, localhost or the
address it is bound to, with its port): a web page whose name an attacker points at
127.0.0.1 (DNS rebinding) sends its own name and is refused. A malformed request gets a
400, never a traceback; an idle connection is closed after ``IDLE_SECONDS``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

from recaption.io.safejson import load_record
from recaption.review.session import ReviewSession

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"), "/style.css": ("style.css", "text/css; charset=utf-8")}
MAX_BODY = 1 << 20
IDLE_SECONDS = 30  # a connection that sends nothing for this long is closed (its thread freed)


def make_handler(session: ReviewSession, default_reviewer: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "recaption-review"
        timeout = IDLE_SECONDS

        def _host_ok(self) -> bool:
            host, port = self.server.server_address[:2]
            names = {str(host), "127.0.0.1", "localhost", "[::1]"} if str(host) in ("127.0.0.1", "localhost", "::1") else {str(host)}
            return (self.headers.get("Host") or "").lower() in {f"{n}:{port}" for n in names}

        def _guarded(self, handle: Any) -> None:
            """Answer a malformed request with 400 and anything unforeseen with 500, one line each."""
            if not self._host_ok():
                self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": "this server answers only to its own address (Host header)"})
                return
            try:
                handle()
            except (ValueError, UnicodeError, RecursionError, OverflowError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"malformed request: {str(exc)[:200]}"})
            except sqlite3.OperationalError as exc:  # the store is locked by someone else for too long
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"the decision store is busy ({exc}); try again"})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away
            except Exception as exc:  # noqa: BLE001 - one bad request must not print a traceback or stop the server
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {str(exc)[:200]}"})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # quiet: the terminal shows the URL and progress, not every request

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in SECURITY_HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _reviewer(self) -> str:
            name = (parse_qs(urlparse(self.path).query).get("reviewer") or [default_reviewer])[0].strip()
            return name[:64] or default_reviewer

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._guarded(self._get)

        def do_POST(self) -> None:  # noqa: N802
            self._guarded(self._post)

        def _get(self) -> None:
            route = urlparse(self.path).path
            if route in STATIC:
                name, kind = STATIC[route]
                self._send(HTTPStatus.OK, (resources.files("recaption.review") / "static" / name).read_bytes(), kind)
            elif route == "/api/state":
                self._json(HTTPStatus.OK, session.state(self._reviewer()))
            elif route.startswith("/image/") and route[len("/image/") :].isdigit():
                found = session.image_bytes(int(route[len("/image/") :]))
                if found is None:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "no image (missing, not an image, or outside the image root)"})
                else:
                    data, kind = found
                    self._send(HTTPStatus.OK, data, kind)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def _post(self) -> None:
            if urlparse(self.path).path != "/api/decision":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            origin = self.headers.get("Origin")
            if not (self.headers.get("Content-Type") or "").startswith("application/json") or (origin and origin != f"http://{self.headers.get('Host')}"):
                self._json(HTTPStatus.FORBIDDEN, {"error": "decisions come as JSON from the review page itself"})
                return
            length_header = self.headers.get("Content-Length") or "0"
            length = int(length_header) if length_header.isdigit() else -1
            if not 0 < length <= MAX_BODY:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "a body of 1 byte to 1 MiB with its Content-Length, please"})
                return
            try:
                body = load_record(self.rfile.read(length), "the decision")  # bounded depth and numbers
                if not isinstance(body, dict):
                    raise ValueError("a decision is a JSON object")
                decision = session.decide(self._reviewer(), body)
            except (ValueError, TypeError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)[:300]})
                return
            # Only the counts: the whole state would rebuild every item (and look up every image).
            positions, _, decided = session.progress(decision.reviewer)
            self._json(HTTPStatus.OK, {"decision": decision.__dict__, "decided": decided, "total": len(positions)})

    return Handler


class _ThreadingServer(ThreadingHTTPServer):
    # http.server listens with a backlog of 5: a burst of connections past it waits on the
    # kernel's SYN retries (1, 3, 7 s ...) before a thread ever sees it.
    request_queue_size = 1024
    daemon_threads = True


class ReviewServer:
    """The server in a thread (tests) or in the foreground (``serve_forever``)."""

    def __init__(self, session: ReviewSession, reviewer: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.session = session
        self.httpd = _ThreadingServer((host, port), make_handler(session, reviewer))
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> ReviewServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.session.store.close()
