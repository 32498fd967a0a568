"""Loading Hugging Face checkpoints the way users expect: by hub id or local folder, with
``device`` and ``dtype`` set to ``auto`` or named, and 8-/4-bit quantisation on CUDA.

Every model that scores or writes captions is named by a hash of its weights' identity and
its settings (``checkpoint_hash``), which each stored score and caption records.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from recaption.errors import RecaptionError

DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZATIONS = ("none", "8bit", "4bit")


class ModelLoadError(RecaptionError, ValueError):
    """A checkpoint could not be loaded; the message says which and what to do."""


def resolve_device(device: str) -> str:
    import torch  # noqa: PLC0415 - heavy; imported when a stage is set up, in the worker

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' asked for, but CUDA is not available on this machine")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto``: bfloat16 on a GPU that has it, else float16 on GPU, float32 on CPU."""
    import torch  # noqa: PLC0415 - torch, loaded only where it is used

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype must be one of {DTYPES}, not '{dtype}'")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def quantization_config(quantization: str, device: str) -> Any:
    if quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"quantization must be one of {QUANTIZATIONS}, not '{quantization}'")
    if quantization == "none":
        return None
    if not device.startswith("cuda"):
        raise ModelLoadError(f"{quantization} quantisation runs on CUDA only (bitsandbytes); this run's device is '{device}'")

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"{quantization} quantisation needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig  # noqa: PLC0415 - transformers, loaded only where it is used

    return BitsAndBytesConfig(load_in_8bit=True) if quantization == "8bit" else BitsAndBytesConfig(load_in_4bit=True)


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """Whether the Hugging Face hub answers at all (a few seconds at most). Offline, the hub
    client retries each file for many seconds: minutes for a model, before saying so."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError:
        return False
    return True


def load_pretrained(loader: Any, model: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(model)`` with an error that says what went wrong in user terms.

    A hub id is looked up in the local cache first; the hub is asked only when it can be
    reached, so an offline machine fails in seconds with the fix, not after minutes of retries.
    """
    if not Path(model).exists():
        try:
            return loader.from_pretrained(model, local_files_only=True, **kwargs)
        except (OSError, ValueError, KeyError):
            if not hub_reachable():
                raise ModelLoadError(
                    f"cannot load {what} '{model}': it is not a local folder, not in the Hugging Face cache, and the hub "
                    f"cannot be reached from here. Download it where there is network (huggingface-cli download {model}) "
                    "and copy the cache over, or give the path of a local checkpoint folder"
                ) from None
    try:
        return loader.from_pretrained(model, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        local = Path(model).exists()
        hint = (
            "the folder exists but is not a complete checkpoint"
            if local
            else "not a local folder, and not in the Hugging Face cache (no network here?)"
        )
        raise ModelLoadError(f"cannot load {what} '{model}': {hint}: {type(exc).__name__}: {str(exc)[:300]}") from exc


def checkpoint_hash(model: str, config: Any, settings: dict[str, Any]) -> str:
    """``name@revision:settings``. The revision is the hub commit when the checkpoint came from
    the hub, else a hash of the local weight files' names and sizes (cheap, and changes when
    the weights are re-saved)."""
    revision = getattr(config, "_commit_hash", None)
    path = Path(model)
    if not revision and path.is_dir():
        h = hashlib.sha256()
        for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            h.update(f"{weights.name}:{weights.stat().st_size}".encode())
        revision = h.hexdigest()[:12]
    name = path.name if path.is_dir() else model
    knobs = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{name}@{(revision or 'unknown')[:12]}:{knobs}"
