"""A captioner behind an OpenAI-compatible server: vLLM (``vllm serve``), SGLang, TGI, LM
Studio, Ollama, or the OpenAI API itself.

Each image goes as a base64 data URI in one chat request (``/chat/completions``) with the
stage's instruction, ``n``, temperature, top_p, ``max_tokens`` and a seed of its own: the
stage's seed mixed with the image's pixels (``recaption.models.vlm.request_seed``), so that two images never share a random stream and
the same image gets the same seed whatever batch it lands in. Requests run ``concurrency`` at a
time. A 429, a 5xx, a timeout or a refused connection is retried with exponential backoff (a
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
import io
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from recaption.models.hf import ModelLoadError
from recaption.models.vlm import Sampling, request_seed

MAX_WAIT_S = 30.0  # the longest single wait between retries, Retry-After included
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
JPEG_QUALITY = 90


class ServiceUnavailable(Exception):
    """The server failed in a way that is not any one record's fault: the run stops."""


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

    # --- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        """One request with retries; the decoded JSON answer."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(MAX_WAIT_S, self.backoff * 2**attempt)
            try:
                request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                detail = _error_text(exc)
                if exc.code in (401, 403):
                    key = f"${self.api_key_env}" if self.api_key_env else "no key"
                    raise ServiceUnavailable(f"vlm_caption: the server at {self.base_url} refused the API key ({key}): {exc.code} {detail}") from exc
                if exc.code == 404:
                    raise ServiceUnavailable(f"vlm_caption: {self.base_url}{path} answered 404 (is base_url right, and is {self.model!r} served?): {detail}") from exc
                if exc.code not in RETRY_STATUS:
                    raise RequestRefused(f"{exc.code} {detail}") from exc
                last = f"{exc.code} {detail}"
                after = exc.headers.get("Retry-After") if exc.headers else None
                if after and after.strip().isdigit():
                    wait = min(MAX_WAIT_S, max(wait, float(after)))
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = f"{type(reason).__name__}: {reason}"
            except json.JSONDecodeError as exc:
                last = f"an answer that is not JSON ({exc})"
            if attempt < self.max_retries:
                time.sleep(wait)
        tries = self.max_retries + 1
        raise ServiceUnavailable(f"vlm_caption: the server at {self.base_url} did not answer after {tries} attempt{'s' if tries > 1 else ''} ({last})")

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
                answer = self._call("POST", "/chat/completions", body)
            except RequestRefused as exc:
                return exc
            choices = answer.get("choices") if isinstance(answer, dict) else None
            if not isinstance(choices, list):
                return RequestRefused(f"an answer with no choices: {str(answer)[:200]}")
            ordered = sorted((c for c in choices if isinstance(c, dict)), key=lambda c: c.get("index", 0))
            return [str((c.get("message") or {}).get("content") or "") for c in ordered]

        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(images)))) as pool:
            return list(pool.map(one, images, prompts))


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read(2000).decode("utf-8", "replace")
    except (OSError, ValueError):
        return exc.reason or ""
    try:
        message = json.loads(body).get("error", body)
        return str(message.get("message", message) if isinstance(message, dict) else message)[:300]
    except (ValueError, AttributeError):
        return body[:300]
