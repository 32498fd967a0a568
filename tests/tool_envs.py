"""The third-party tools the tests round-trip with, each in an environment of its own
(``scripts/tool_env.sh``, built by ``make test``), and a local HTTP server for them to fetch from."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(venv: str, command: str) -> Path:
    """The tool's command in ROOT/VENV (or $RECAPTION_TOOLS_DIR/VENV); skip, naming the make
    target, where it was not built."""
    base = Path(os.environ.get("RECAPTION_TOOLS_DIR", ROOT))
    path = base / venv / "bin" / command
    if not path.exists():
        pytest.skip(f"{command} is not installed here: run `make {venv}` (scripts/tool_env.sh)")
    return path


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A folder served over HTTP on 127.0.0.1 (a free port) while the block runs; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
