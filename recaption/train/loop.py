"""``recaption train captioner``: the training loop.

AdamW (the paper's β2 0.98, eps 1e-6, weight decay 0.2 on weights, none on norms and
biases), linear warm-up then cosine decay to ``min_lr_ratio`` of the peak, gradient
accumulation and clipping, bf16/fp16 autocast on a GPU. Every ``save_every`` steps a
checkpoint (model + optimizer, scheduler and step) is written under ``OUTPUT/checkpoints``;
running the same command again resumes from the newest one. The finished model is
``OUTPUT/model``, the folder ``altogether_caption`` takes. ``OUTPUT/train_log.jsonl`` has the
loss, learning rate and rate every ``log_every`` steps.

Batches are a pure function of (seed, step): the order of examples is a seeded permutation
per epoch and each step's alt-text dropout and prompt choice come from a generator seeded
with (seed, step), so a resumed run sees exactly the batches the uninterrupted one would.
"""

from __future__ import annotations

import functools
import json
import math
import pickle
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from recaption.errors import RecaptionError
from recaption.models.altogether import AltogetherCaptioner
from recaption.models.clip import ClipScorer
from recaption.models.embedding_cache import cache_folder_of
from recaption.models.hf import resolve_device
from recaption.train.config import TrainConfig
from recaption.train.data import Example, TrainingSet, training_set

KEEP_CHECKPOINTS = 2
STATE_FILE = "trainer.pt"


class TrainError(RecaptionError, RuntimeError):
    """Training cannot go on; the message says why."""


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(named: list[tuple[str, Any]], weight_decay: float) -> list[dict[str, Any]]:
    """Decay on matrices; none on norms, biases and other vectors."""
    decay = [p for _, p in named if p.ndim >= 2]
    rest = [p for _, p in named if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@functools.lru_cache(maxsize=2)  # a micro-batch spans at most two epochs
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(step: int, micro: int, n: int, batch_size: int, grad_accum: int, seed: int) -> np.ndarray:
    """The example indices of micro-batch ``micro`` of optimizer step ``step``."""
    start = (step * grad_accum + micro) * batch_size
    return np.asarray([epoch_order(seed, position // n, n)[position % n] for position in range(start, start + batch_size)])


def prompts_for(examples: list[Example], rng: np.random.Generator, alt_dropout: float) -> list[str]:
    """Each example's alt-text prompt: "" with probability ``alt_dropout``, else one of its
    alt-texts (or "" where it has none)."""
    out = []
    for ex in examples:
        drop = rng.random() < alt_dropout
        pick = int(rng.integers(0, len(ex.alt_texts))) if ex.alt_texts else -1
        out.append("" if drop or pick < 0 else ex.alt_texts[pick])
    return out


def autocast_dtype(precision: str, device: str) -> Any:
    import torch  # noqa: PLC0415 - torch, loaded only where it is used

    if not device.startswith("cuda") or precision == "fp32":
        if precision in ("bf16", "fp16") and not device.startswith("cuda"):
            raise TrainError(f"precision {precision} is for a GPU; this run's device is {device} (use fp32 or auto)")
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def newest_checkpoint(output: Path) -> Path | None:
    found = sorted((output / "checkpoints").glob("step-*"))
    return next((p for p in reversed(found) if (p / STATE_FILE).exists()), None)


def total_steps(config: TrainConfig, n: int) -> int:
    return config.steps or max(1, math.ceil(config.epochs * n / (config.batch_size * config.grad_accum)))


def train_captioner(config: TrainConfig, progress: bool = True, overwrite: bool = False) -> Path:
    import torch  # noqa: PLC0415 - torch, loaded only where it is used


    output = Path(config.output)
    if _already_trained(output, overwrite):
        print(f"recaption: {output / 'model'} is already trained (use --overwrite to train again)")
        return output / "model"
    output.mkdir(parents=True, exist_ok=True)
    (output / "train_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    device = resolve_device(config.device)
    amp = autocast_dtype(config.precision, device)

    if config.init:
        captioner = AltogetherCaptioner.load(config.init)
        captioner.config.train_decoder = config.model.train_decoder
        config.model = captioner.config
    data, encoder_hash = _embedded_examples(config, output, device, progress)

    resume = newest_checkpoint(output)
    if resume is not None:
        captioner = AltogetherCaptioner.load(resume)
    elif not config.init:
        captioner = AltogetherCaptioner.new(config.model, embed_dim=int(data.embeddings.shape[1]), seed=config.seed)
    captioner.config.encoder_hash = encoder_hash
    captioner.to(device)
    captioner.train()
    named = captioner.trainable_parameters()
    optimizer = torch.optim.AdamW(param_groups(named, config.weight_decay), lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)
    steps = total_steps(config, len(data.examples))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config.warmup, steps, config.min_lr_ratio))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    step = _restore_trainer(resume, device, optimizer, scheduler, scaler) if resume is not None else 0
    if resume is not None:
        print(f"recaption: resuming from {resume} (step {step} of {steps})")

    embeddings = torch.from_numpy(data.embeddings)
    skipped = f", {len(data.skipped)} skipped" if data.skipped else ""
    print(f"recaption: training on {len(data.examples)} examples{skipped}; {steps} steps of {config.batch_size}x{config.grad_accum} on {device}")
    bar = tqdm(total=steps, initial=step, desc="training captioner", unit="step", disable=not progress)
    log = open(output / "train_log.jsonl", "a", encoding="utf-8")
    started, seen = time.perf_counter(), 0
    try:
        while step < steps:
            rng = np.random.default_rng([config.seed, step, 1])
            torch.manual_seed(config.seed * 1_000_003 + step)  # dropout too is a function of the step
            total = 0.0
            for micro in range(config.grad_accum):
                idx = batch_indices(step, micro, len(data.examples), config.batch_size, config.grad_accum, config.seed)
                batch = [data.examples[i] for i in idx]
                alt = captioner.alt_ids(prompts_for(batch, rng, config.alt_dropout))
                captions = captioner.caption_ids([ex.caption for ex in batch])
                with torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None):
                    loss = captioner.loss(embeddings[idx], alt, captions) / config.grad_accum
                if not torch.isfinite(loss):
                    raise TrainError(f"the loss is {loss.item()} at step {step}; lower lr or use bf16/fp32")
                scaler.scale(loss).backward()
                total += loss.item()
                seen += len(batch)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for _, p in named], config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            rate = seen / max(1e-9, time.perf_counter() - started)
            bar.update(1)
            bar.set_postfix(loss=f"{total:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", ex_s=f"{rate:.1f}")
            if step % config.log_every == 0 or step == steps:
                log.write(json.dumps({"step": step, "loss": round(total, 5), "lr": scheduler.get_last_lr()[0], "examples_per_s": round(rate, 2)}) + "\n")
                log.flush()
            if step % config.save_every == 0 and step < steps:
                save_checkpoint(output, captioner, optimizer, scheduler, scaler, step)
    finally:
        bar.close()
        log.close()
    captioner.train(False)
    final = captioner.save(output / "model")
    (final / "training.json").write_text(json.dumps({"name": config.name, "kind": config.kind, "steps": steps, "examples": len(data.examples), "config": asdict(config)}, indent=2, default=str))
    return final


def _already_trained(output: Path, overwrite: bool) -> bool:
    """Whether OUTPUT holds a finished model; with ``overwrite``, an earlier run (only one) is deleted first."""
    if overwrite and output.exists():
        if not (output / "train_config.yaml").exists():
            raise TrainError(f"--overwrite refuses to delete {output}: it holds no captioner training run")
        shutil.rmtree(output)
    return (output / "model" / "altogether.json").exists()


def _embedded_examples(config: TrainConfig, output: Path, device: str, progress: bool) -> tuple[TrainingSet, str]:
    """The training examples with their frozen-encoder image embeddings (and the encoder's hash);
    what could not be used is listed in OUTPUT/skipped.jsonl."""

    encoder = ClipScorer(config.model.encoder, device, "float32")
    data = training_set(config.kind, config.data, config.image_root, encoder, cache_folder_of(config.cache), progress)
    with open(output / "skipped.jsonl", "w", encoding="utf-8") as fh:
        for row in data.skipped:
            fh.write(json.dumps(row) + "\n")
    if not data.examples:
        raise TrainError(f"no usable training examples in {config.data} ({len(data.skipped)} skipped: see {output / 'skipped.jsonl'})")
    return data, encoder.model_hash  # the encoder is done with: its embeddings are all training needs


def _restore_trainer(resume: Path, device: str, optimizer: Any, scheduler: Any, scaler: Any) -> int:
    """The optimizer, schedule and scaler of a checkpoint; returns its step."""
    import torch  # noqa: PLC0415 - torch, loaded only where it is used

    # weights_only: a trainer state is tensors and numbers; a planted file that asks to run
    # code on load is refused rather than run.
    try:
        state = torch.load(resume / STATE_FILE, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise TrainError(f"{resume / STATE_FILE} is not a trainer state this version wrote ({str(exc).splitlines()[0][:200]}); "
                         "remove that checkpoint folder to resume from the one before") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return int(state["step"])


def save_checkpoint(output: Path, captioner: AltogetherCaptioner, optimizer: Any, scheduler: Any, scaler: Any, step: int) -> Path:
    import torch  # noqa: PLC0415 - torch, loaded only where it is used

    folder = output / "checkpoints" / f"step-{step:07d}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    captioner.save(partial)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step}, partial / STATE_FILE)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)  # a checkpoint is whole or absent: a kill mid-save leaves only .partial
    for old in sorted((output / "checkpoints").glob("step-???????"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder
