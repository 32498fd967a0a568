"""A captioner behind an OpenAI-compatible server: vLLM (``vllm serve``), SGLang, TGI, LM
Studio, Ollama, or the OpenAI API itself.

Each image goes as a base64 data URI in one chat request (``/chat/completions``) with the
stage's instruction, ``n``, temperature, top_p, ``max_tokens`` and a seed of its own: the
stage's seed mixed with the image's pixels (``recaption.models.captioner.request_seed``), so that two images never share a random stream and
the same image gets the same seed whatever batch it lands in. Requests run ``concurrency`` at a
time. Each exchange must be whole within ``request_timeout`` (connect to last byte: a body
trickled a byte a second is cut off), an answer is read up to what ``n`` x ``max_new_tokens``
can take, no redirect is ever followed (the key would go with it to wherever it points), and a
server's choices become exactly ``n`` captions of at most the reader's ``MAX_TEXT_CHARS``.
A 429, a 5xx, a timeout or a refused connection is retried with exponential backoff (a
``Retry-After`` header is honoured, up to ``MAX_WAIT_S``); when the retries run out, or the
server refuses the key (401/403) or the model (404), the server is down for every record, so
the run stops with one line (``ServiceUnavailable``, which the stage turns into a
``SystematicFailure``) instead of rejecting the dataset record by
record. A 400 for one image (too large, refused by a content policy) is that record's
``RequestRefused``, and the stage rejects it alone.

The API key comes from an environment variable (``api_key_env``), never from the recipe.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from recaption.limits import MAX_TEXT_CHARS
from recaption.models.captioner import Sampling, ServiceUnavailable, request_seed
from recaption.models.hf import ModelLoadError

MAX_WAIT_S = 30.0  # the longest single wait between retries, Retry-After included
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
JPEG_QUALITY = 90
# What a server may send back: an answer past these is not read further (a hostile or broken
# server must not fill memory). A token is a few bytes of text, and JSON may write each
# character of it as a six-byte \u escape.
BYTES_PER_TOKEN = 64
ANSWER_ENVELOPE_BYTES = 64 * 1024
MAX_LIST_BYTES = 4 * 1024 * 1024  # /models
READ_PIECE = 64 * 1024


class AnswerTooLarge(OSError):
    """An answer over its byte limit: that request's, not the server's, problem."""


class RequestRefused(Exception):
    """The server refused one record's request (a 4xx other than auth, model or rate limit)."""


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAICompatibleCaptioner:
    """The captioner protocol of ``recaption.models.vlm`` over HTTP."""

    family = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ModelLoadError(f"backend 'openai' needs base_url, e.g. http://127.0.0.1:8000/v1, not {base_url!r}")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ModelLoadError("backend 'openai' needs concurrency >= 1, max_retries >= 0 and timeout > 0")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.api_key_env = api_key_env
        self.concurrency, self.timeout, self.max_retries, self.backoff = concurrency, timeout, max_retries, backoff
        served = self._served_models()
        if served is not None and model not in served:
            raise ModelLoadError(f"the server at {self.base_url} does not serve {model!r}; it serves: {', '.join(served) or 'nothing'}")
        self.model_hash = f"openai:{model}@{self.base_url}"
        self.extra_choices_dropped = 0  # choices past the n asked for, over this captioner's life
        self._lock = threading.Lock()

    # --- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None, max_body: int = MAX_LIST_BYTES) -> Any:
        """One request with retries; the decoded JSON answer."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(MAX_WAIT_S, self.backoff * 2**attempt)
            try:
                status, answer_headers, answer = self._exchange(method, path, data, headers, max_body)
                if 200 <= status < 300:
                    return json.loads(answer)
                detail = _error_text(answer)
                if 300 <= status < 400:  # never followed: the key would go with it (see _exchange)
                    where = (answer_headers.get("Location") or "")[:200]
                    raise ServiceUnavailable(f"vlm_caption: the server at {self.base_url} redirected {path} to {where!r}; recaption follows no "
                                             "redirect (the API key would go with it): set base_url to the address that answers")
                if status in (401, 403):
                    key = f"${self.api_key_env}" if self.api_key_env else "no key"
                    raise ServiceUnavailable(f"vlm_caption: the server at {self.base_url} refused the API key ({key}): {status} {detail}")
                if status == 404:
                    raise ServiceUnavailable(f"vlm_caption: {self.base_url}{path} answered 404 (is base_url right, and is {self.model!r} served?): {detail}")
                if status not in RETRY_STATUS:
                    raise RequestRefused(f"{status} {detail}")
                last = f"{status} {detail}"
                after = answer_headers.get("Retry-After")
                if after and after.strip().isdigit():
                    wait = min(MAX_WAIT_S, max(wait, float(after)))
            except AnswerTooLarge as exc:
                raise RequestRefused(str(exc)) from None
            except (TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            except json.JSONDecodeError as exc:
                last = f"an answer that is not JSON ({exc})"
            if attempt < self.max_retries:
                time.sleep(wait)
        tries = self.max_retries + 1
        raise ServiceUnavailable(f"vlm_caption: the server at {self.base_url} did not answer after {tries} attempt{'s' if tries > 1 else ''} ({last})")

    def _exchange(self, method: str, path: str, data: bytes | None, headers: dict[str, str], max_body: int) -> tuple[int, Any, bytes]:
        """One HTTP exchange, whole within ``timeout`` seconds, connect to last byte.

        ``http.client`` rather than ``urllib``: urllib follows redirects to any host with the
        request's headers (the key included) and replays a POST as a GET; here a redirect is
        answered to the caller, which never follows it. A socket timeout bounds each read, not
        the exchange (a body sent a byte a second never times out), so a timer closes the
        socket at the deadline; the body is read in pieces up to ``max_body`` bytes.
        """
        deadline = time.monotonic() + self.timeout
        url = urllib.parse.urlsplit(self.base_url + path)
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = connection_class(url.hostname or "", url.port, timeout=self.timeout)
        timer, response = None, None
        try:
            conn.connect()  # bounded by the socket timeout; the socket is held: a response may take it from conn
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, (conn.sock,))
            timer.daemon = True
            timer.start()
            conn.request(method, url.path + (f"?{url.query}" if url.query else ""), body=data, headers=headers)
            response = conn.getresponse()
            pieces, size = [], 0
            while True:
                piece = response.read1(READ_PIECE)
                if not piece:
                    break
                size += len(piece)
                if size > max_body:
                    raise AnswerTooLarge(f"the server's answer is over {max_body} bytes (max_new_tokens x n allows that much); not read further")
                pieces.append(piece)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no whole answer within {self.timeout:g} s")
            return response.status, response.headers, b"".join(pieces)
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no whole answer within {self.timeout:g} s") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if response is not None:
                response.close()
            conn.close()

    def _served_models(self) -> list[str] | None:
        """The models the server lists; None where it does not list them (not every server does)."""
        try:
            answer = self._call("GET", "/models")
        except RequestRefused:
            return None
        except ServiceUnavailable as exc:
            raise ModelLoadError(str(exc).removeprefix("vlm_caption: ")) from exc
        models = answer.get("data") if isinstance(answer, dict) else None
        return [str(m.get("id")) for m in models if isinstance(m, dict)] if isinstance(models, list) else None

    # --- the captioner protocol ------------------------------------------------------------

    def format_prompt(self, instruction: str) -> str:
        return instruction  # the server applies the model's own chat template

    def generate(self, images: list[Image.Image], prompts: list[str], sampling: Sampling) -> list[list[str] | RequestRefused]:
        def one(image: Image.Image, prompt: str) -> list[str] | RequestRefused:
            uri = data_uri(image)
            body: dict[str, Any] = {
                "model": self.model,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": prompt}]}],
                "n": sampling.n,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens,
                "seed": request_seed(sampling.seed, image),
            }
            if sampling.repetition_penalty != 1.0:
                body["repetition_penalty"] = sampling.repetition_penalty  # vLLM's extra parameter
            try:
                answer = self._call("POST", "/chat/completions", body, answer_limit(sampling))
            except RequestRefused as exc:
                return exc
            choices = answer.get("choices") if isinstance(answer, dict) else None
            if not isinstance(choices, list):
                return RequestRefused(f"an answer with no choices: {str(answer)[:200]}")
            texts = choice_texts(choices)
            if len(texts) > sampling.n:
                with self._lock:
                    self.extra_choices_dropped += len(texts) - sampling.n
            return texts[: sampling.n]

        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(images)))) as pool:
            return list(pool.map(one, images, prompts))


def answer_limit(sampling: Sampling) -> int:
    """The most bytes a completion answer may take: ``n`` choices of ``max_new_tokens`` tokens,
    each token room for ``BYTES_PER_TOKEN`` bytes of escaped JSON, and the envelope."""
    return ANSWER_ENVELOPE_BYTES + max(1, sampling.n) * max(1, sampling.max_new_tokens) * BYTES_PER_TOKEN


def choice_texts(choices: list[Any]) -> list[str]:
    """The texts of a completion's choices in their ``index`` order (a choice whose index is no
    integer goes after those that have one, in the order sent), each cut to the longest text
    a reader of ours accepts (``MAX_TEXT_CHARS``)."""
    def order(item: tuple[int, Any]) -> tuple[int, int, int]:
        position, choice = item
        index = choice.get("index")
        whole = isinstance(index, int) and not isinstance(index, bool)
        return (0, index, position) if whole else (1, 0, position)

    found = sorted(((k, c) for k, c in enumerate(choices) if isinstance(c, dict)), key=order)
    texts = []
    for _, choice in found:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        texts.append(content[:MAX_TEXT_CHARS] if isinstance(content, str) else "")
    return texts


def _shut(sock: socket.socket) -> None:
    """End an exchange past its deadline: a blocked read returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _error_text(raw: bytes) -> str:
    body = raw[:2000].decode("utf-8", "replace")
    try:
        message = json.loads(body).get("error", body)
        return str(message.get("message", message) if isinstance(message, dict) else message)[:300]
    except (ValueError, AttributeError):
        return body[:300]
