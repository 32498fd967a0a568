"""``recaption review DATASET``: the review page, served from this machine.

Plain ``http.server`` (threads), bound to 127.0.0.1 unless told otherwise. Routes:

- ``GET /`` the page, ``GET /app.js`` its script (no inline script: the Content-Security-
  Policy forbids it, so a caption can never run as code even if escaping failed);
- ``GET /api/state?reviewer=NAME`` the pairs, candidates and this reviewer's decisions;
- ``GET /image/N`` the image of the N-th pair, from inside the image roots only;
- ``POST /api/decision?reviewer=NAME`` a JSON decision, stored before the answer goes back.

Everything from the data reaches the page as JSON and is put on screen with ``textContent``.
A POST must be JSON from this page's own origin (a cross-site form can send neither).
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

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


def make_handler(session: ReviewSession, default_reviewer: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "recaption-review"

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
                    self._send(HTTPStatus.OK, data.read_bytes() if isinstance(data, Path) else data, kind)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if urlparse(self.path).path != "/api/decision":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            origin = self.headers.get("Origin")
            if not (self.headers.get("Content-Type") or "").startswith("application/json") or (origin and origin != f"http://{self.headers.get('Host')}"):
                self._json(HTTPStatus.FORBIDDEN, {"error": "decisions come as JSON from the review page itself"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "empty or oversized body"})
                return
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict):
                    raise ValueError("a decision is a JSON object")
                decision = session.decide(self._reviewer(), body)
            except (ValueError, TypeError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            # Only the counts: the whole state would rebuild every item (and look up every image).
            positions, _, decided = session.progress(decision.reviewer)
            self._json(HTTPStatus.OK, {"decision": decision.__dict__, "decided": decided, "total": len(positions)})

    return Handler


class ReviewServer:
    """The server in a thread (tests) or in the foreground (``serve_forever``)."""

    def __init__(self, session: ReviewSession, reviewer: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.session = session
        self.httpd = ThreadingHTTPServer((host, port), make_handler(session, reviewer))
        self.httpd.daemon_threads = True
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
