"""A small client of Label Studio's REST API: what ``review labelstudio push`` and ``import
--url`` need (create a project, attach the export's image folder, import the tasks; read the
annotations back with the annotators' e-mails). Plain ``urllib``: no SDK to pin.

Tokens: a personal access token (a JWT, Label Studio's default since 1.15) is exchanged for a
short-lived access token at ``/api/token/refresh``; anything else is sent as a legacy
``Token``. By default the token comes from ``$LABEL_STUDIO_API_KEY``, as for Label Studio's SDK.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from recaption.errors import RecaptionError

TOKEN_ENV = "LABEL_STUDIO_API_KEY"
TIMEOUT_S = 60
MAX_RESPONSE_BYTES = 512 * 1024 * 1024  # an export of a big project, read whole


class LabelStudioError(RecaptionError, ValueError):
    """Label Studio cannot be reached, refuses the token, or refuses a request; says which."""


class LabelStudioClient:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise LabelStudioError(f"no Label Studio token: pass --token, or set ${TOKEN_ENV} (Account & Settings > Personal Access Token)")
        self._token = token
        self._auth: str | None = None

    def _authorization(self) -> str:
        if self._auth is None:
            if self._token.count(".") == 2:  # a personal access token (JWT refresh token)
                access = self._send("POST", "/api/token/refresh", {"refresh": self._token}, auth=False)
                if not isinstance(access, dict) or not isinstance(access.get("access"), str):
                    raise LabelStudioError(f"{self.url} gave no access token for the personal access token")
                self._auth = f"Bearer {access['access']}"
            else:
                self._auth = f"Token {self._token}"
        return self._auth

    def get(self, path: str) -> Any:
        return self._send("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self._send("POST", path, body)

    def fetch(self, path: str) -> tuple[int, bytes]:
        """A raw GET (an image Label Studio serves): its status and bytes."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": self._authorization()})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - the user's own server
                return response.status, response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except (urllib.error.URLError, OSError) as exc:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {getattr(exc, 'reason', exc)}") from None

    def _send(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = self._authorization()
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 - the user's own server
                raw = response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            detail = _detail(exc.read(4096))
            if exc.code in (401, 403):
                raise LabelStudioError(f"Label Studio at {self.url} refuses the token ({exc.code}: {detail})") from None
            raise LabelStudioError(f"Label Studio refused {method} {path} ({exc.code}: {detail})") from None
        except (urllib.error.URLError, OSError) as exc:
            raise LabelStudioError(f"cannot reach Label Studio at {self.url}: {getattr(exc, 'reason', exc)}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise LabelStudioError(f"{self.url}{path} did not answer JSON: is {self.url} Label Studio?") from None

    def users(self) -> dict[int, str]:
        """User id -> e-mail, for the annotators an export names by id."""
        found = self.get("/api/users")
        return {u["id"]: u["email"] for u in found or [] if isinstance(u, dict) and isinstance(u.get("id"), int) and u.get("email")}


def _detail(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:200]
    if isinstance(body, dict):
        parts = [str(body.get("detail") or "")]
        if body.get("validation_errors"):
            parts.append(json.dumps(body["validation_errors"])[:300])
        return " ".join(p for p in parts if p)[:400] or json.dumps(body)[:300]
    return str(body)[:200]
