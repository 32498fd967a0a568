"""One typed config per captioner experiment, read from YAML::

    name: altogether-pretrain
    data: pairs.jsonl            # pretrain: any input `recaption run` reads (its texts are alt-texts)
    kind: pretrain               # or finetune: JSON lines of {image, alt_text, caption}
    model:
      encoder: openai/clip-vit-large-patch14
      decoder: facebook/opt-1.3b
    steps: 2000
    batch_size: 32

Unknown keys are errors (with the nearest known one), so a typo never trains silently with a
default. ``--set KEY=VALUE`` (``model.KEY`` for the model) overrides a value, read as YAML.
The output folder carries the experiment's name unless ``output`` says otherwise.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from recaption.errors import UsageError
from recaption.models.altogether import AltogetherConfig

KINDS = ("pretrain", "finetune")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ConfigError(UsageError, ValueError):
    """The training config cannot run as written; the message says which key and why."""


@dataclass
class TrainConfig:
    name: str
    data: str
    kind: str = "pretrain"
    output: str = ""  # default: runs/<name>
    image_root: str | None = None  # image paths are relative to this (default: the data file's folder)
    init: str | None = None  # a captioner checkpoint to start from (fine-tuning); its model settings win
    model: AltogetherConfig = field(default_factory=AltogetherConfig)
    steps: int = 0  # optimizer steps; 0: from epochs
    epochs: float = 1.0
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    max_grad_norm: float = 1.0
    alt_dropout: float = 0.5  # probability that a sample's alt-text is replaced by ""
    precision: str = "auto"  # auto: bf16 autocast on a GPU that has it, fp16 on others, fp32 on CPU
    device: str = "auto"
    save_every: int = 500
    log_every: int = 10
    seed: int = 0
    cache: str = "auto"  # image-embedding cache: auto, a folder, or none

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum, "save_every": self.save_every, "log_every": self.log_every}
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be at least 1")
        if self.steps < 0 or (self.steps == 0 and self.epochs <= 0):
            raise ConfigError("give steps > 0, or epochs > 0")
        if not 0 <= self.alt_dropout <= 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("alt_dropout and min_lr_ratio must be between 0 and 1")
        if not self.output:
            self.output = str(Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_keys(values: dict[str, Any], known: list[str], where: str) -> None:
    for key in values:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{where}: unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else f"; known: {', '.join(known)}"))


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a training config is a mapping of keys to values")
    values.setdefault("model", {})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: write KEY=VALUE (model.KEY for the model)")
        value = yaml.safe_load(raw) if raw.strip() else ""
        if key.startswith("model."):
            values["model"][key[len("model.") :]] = value
        else:
            values[key] = value
    top = [f.name for f in fields(TrainConfig)]
    _check_keys(values, top, str(path))
    _check_keys(values["model"] or {}, [f.name for f in fields(AltogetherConfig)], f"{path}: model")
    for required in ("name", "data"):
        if not values.get(required):
            raise ConfigError(f"{path}: '{required}' is required")
    try:
        values["model"] = AltogetherConfig.from_dict(values["model"] or {})
        config = TrainConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config
