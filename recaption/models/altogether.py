"""The alt-text re-aligning captioner (after "Altogether", built on ClipCap).

A frozen CLIP image encoder gives one pooled, L2-normalised embedding per image (made by
``recaption.models.embedding_cache.CachedImageEmbeddings``, so that training and captioning see the
same preprocessing). A mapping network turns it into ``visual_tokens`` vectors in the
decoder's word-embedding space. The decoder (any Hugging Face causal LM) reads:

    [visual tokens][alt-text tokens, left-padded][BOS caption tokens EOS, right-padded]

and the loss falls on the caption tokens and EOS only. Position ids count attended tokens
only (the cumulative sum of the attention mask), which is also what ``generate`` does, so the
padding between the visual tokens and a short alt-text changes nothing at inference.

A checkpoint is a folder: ``altogether.json`` (this config and the encoder's hash),
``mapper.safetensors``, and ``decoder/`` (the decoder and its tokenizer) when the decoder was
trained, in this run or an earlier one; a decoder never trained (ClipCap mode) is named by its
id instead of copied.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from recaption.models.hf import ModelLoadError, load_pretrained

CONFIG_FILE = "altogether.json"
MAPPER_FILE = "mapper.safetensors"


@dataclass
class AltogetherConfig:
    encoder: str = "openai/clip-vit-large-patch14"  # any CLIP-like checkpoint with an image tower
    decoder: str = "facebook/opt-1.3b"  # any causal LM
    visual_tokens: int = 40
    mapper_layers: int = 8
    mapper_heads: int = 8
    mapper_width: int = 0  # 0: the decoder's word-embedding width
    max_alt_tokens: int = 128
    max_caption_tokens: int = 256  # the caption's tokens and its EOS
    train_decoder: bool = True  # False: ClipCap, only the mapping network learns
    embed_dim: int = 0  # the encoder's embedding width, filled in when the model is built
    encoder_hash: str = ""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AltogetherConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown captioner setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def _torch():
    import torch  # noqa: PLC0415 - heavy; imported when a model is built

    return torch


def build_mapper(embed_dim: int, width: int, out_dim: int, tokens: int, layers: int, heads: int) -> Any:
    torch = _torch()
    nn = torch.nn

    class MappingNetwork(nn.Module):
        """ClipCap's transformer mapper: the embedding, projected to ``tokens`` vectors, and as
        many learned constant tokens go through a transformer; the constants' outputs are the
        visual tokens."""

        def __init__(self) -> None:
            super().__init__()
            self.tokens, self.width = tokens, width
            self.project = nn.Linear(embed_dim, tokens * width)
            self.constant = nn.Parameter(torch.randn(tokens, width) * 0.02)
            layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(width)
            self.out = nn.Linear(width, out_dim)

        def forward(self, embeddings: Any) -> Any:
            x = self.project(embeddings).view(-1, self.tokens, self.width)
            x = torch.cat([x, self.constant.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
            return self.out(self.norm(self.transformer(x)[:, self.tokens :]))

    if width % heads:
        raise ValueError(f"mapper_width {width} must be a multiple of mapper_heads {heads}")
    return MappingNetwork()


def positions(mask: Any) -> Any:
    """Position ids that skip padding: the same formula ``generate`` uses."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


class AltogetherCaptioner:
    """Mapping network + decoder + tokenizer. ``loss`` for training, ``generate`` for captions."""

    def __init__(self, config: AltogetherConfig, mapper: Any, decoder: Any, tokenizer: Any, decoder_is_own: bool = False) -> None:
        self.config, self.mapper, self.decoder, self.tokenizer = config, mapper, decoder, tokenizer
        # A decoder that a checkpoint carries (it was trained) is saved with every later
        # checkpoint, even when training goes on with it frozen.
        self.decoder_is_own = decoder_is_own
        self.torch = _torch()
        self.bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        if self.eos is None:
            raise ModelLoadError(f"the decoder's tokenizer ({type(tokenizer).__name__}) has no EOS token; captions could not end")

    # --- building and saving ------------------------------------------------------------

    @classmethod
    def new(cls, config: AltogetherConfig, embed_dim: int, seed: int = 0) -> AltogetherCaptioner:
        """A fresh mapping network in front of the pretrained decoder ``config.decoder``."""
        import transformers as tf  # noqa: PLC0415 - transformers, loaded only where it is used

        decoder = load_pretrained(tf.AutoModelForCausalLM, config.decoder, "captioner decoder")
        tokenizer = load_pretrained(tf.AutoTokenizer, config.decoder, "captioner decoder's tokenizer")
        out_dim = decoder.get_input_embeddings().embedding_dim
        config.embed_dim = embed_dim
        config.mapper_width = config.mapper_width or out_dim
        _torch().manual_seed(seed)
        mapper = build_mapper(embed_dim, config.mapper_width, out_dim, config.visual_tokens, config.mapper_layers, config.mapper_heads)
        return cls(config, mapper, decoder, tokenizer)

    @classmethod
    def load(cls, folder: str | Path, dtype: Any = None) -> AltogetherCaptioner:
        import transformers as tf  # noqa: PLC0415 - transformers, loaded only where it is used
        from safetensors.torch import load_file  # noqa: PLC0415 - torch (safetensors.torch), loaded only where it is used

        folder = checkpoint_folder(folder)
        config = AltogetherConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        source = str(folder / "decoder") if (folder / "decoder").is_dir() else config.decoder
        kwargs = {"dtype": dtype} if dtype is not None else {}
        decoder = load_pretrained(tf.AutoModelForCausalLM, source, "captioner decoder", **kwargs)
        tokenizer = load_pretrained(tf.AutoTokenizer, source, "captioner decoder's tokenizer")
        out_dim = decoder.get_input_embeddings().embedding_dim
        mapper = build_mapper(config.embed_dim, config.mapper_width, out_dim, config.visual_tokens, config.mapper_layers, config.mapper_heads)
        mapper.load_state_dict(load_file(str(folder / MAPPER_FILE)))
        if dtype is not None:
            mapper.to(dtype)
        return cls(config, mapper, decoder, tokenizer, decoder_is_own=source != config.decoder)

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file  # noqa: PLC0415 - torch (safetensors.torch), loaded only where it is used

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.mapper.state_dict().items()}, str(folder / MAPPER_FILE))
        if self.config.train_decoder or self.decoder_is_own:
            self.decoder.save_pretrained(folder / "decoder")
            self.tokenizer.save_pretrained(folder / "decoder")
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return folder

    def to(self, device: Any) -> AltogetherCaptioner:
        self.mapper.to(device)
        self.decoder.to(device)
        return self

    @property
    def device(self) -> Any:
        return next(self.mapper.parameters()).device

    def trainable_parameters(self) -> list[tuple[str, Any]]:
        named = [(f"mapper.{n}", p) for n, p in self.mapper.named_parameters()]
        if self.config.train_decoder:
            named += [(f"decoder.{n}", p) for n, p in self.decoder.named_parameters()]
        return named

    def train(self, mode: bool = True) -> None:
        self.mapper.train(mode)
        self.decoder.train(mode and self.config.train_decoder)
        self.decoder.requires_grad_(self.config.train_decoder)

    # --- tokens ---------------------------------------------------------------------------

    def alt_ids(self, alt_texts: list[str]) -> list[list[int]]:
        """Alt-text tokens, cut to ``max_alt_tokens``; "" gives none."""
        enc = self.tokenizer(alt_texts, add_special_tokens=False)["input_ids"]
        return [ids[: self.config.max_alt_tokens] for ids in enc]

    def caption_ids(self, captions: list[str]) -> list[list[int]]:
        """BOS, the caption's tokens and EOS; a long caption is cut and keeps its EOS."""
        keep = self.config.max_caption_tokens - 1
        enc = self.tokenizer(captions, add_special_tokens=False)["input_ids"]
        return [[self.bos, *ids[:keep], self.eos] for ids in enc]

    def _prompt(self, embeddings: Any, alt: list[list[int]]) -> tuple[Any, Any]:
        """Input embeddings and mask of [visual][alt-text, left-padded]."""
        torch = self.torch
        width = max((len(a) for a in alt), default=0)
        ids = torch.tensor([[self.pad] * (width - len(a)) + a for a in alt], dtype=torch.long, device=self.device).view(len(alt), width)
        alt_mask = torch.tensor([[0] * (width - len(a)) + [1] * len(a) for a in alt], dtype=torch.long, device=self.device).view(len(alt), width)
        visual = self.mapper(embeddings.to(self.device, next(self.mapper.parameters()).dtype))
        words = self.decoder.get_input_embeddings()(ids)
        mask = torch.cat([torch.ones(visual.shape[:2], dtype=torch.long, device=self.device), alt_mask], dim=1)
        return torch.cat([visual.to(words.dtype), words], dim=1), mask

    # --- training and inference -----------------------------------------------------------

    def layout(self, embeddings: Any, alt: list[list[int]], captions: list[list[int]]) -> tuple[Any, Any, Any]:
        """Training inputs: [visual][alt-text, left-padded][BOS caption EOS, right-padded] as
        input embeddings, the attention mask, and labels that are -100 everywhere but on the
        caption's tokens and its EOS (the decoder shifts them by one)."""
        torch = self.torch
        prompt, prompt_mask = self._prompt(embeddings, alt)
        width = max(len(c) for c in captions)
        ids = torch.tensor([c + [self.pad] * (width - len(c)) for c in captions], dtype=torch.long, device=self.device)
        cap_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in captions], dtype=torch.long, device=self.device)
        inputs = torch.cat([prompt, self.decoder.get_input_embeddings()(ids)], dim=1)
        mask = torch.cat([prompt_mask, cap_mask], dim=1)
        labels = torch.full(mask.shape, -100, dtype=torch.long, device=self.device)
        labels[:, prompt.shape[1] + 1 :] = ids[:, 1:].masked_fill(cap_mask[:, 1:] == 0, -100)
        return inputs, mask, labels

    def loss(self, embeddings: Any, alt: list[list[int]], captions: list[list[int]]) -> Any:
        """Mean cross-entropy over the caption tokens and EOS of the batch."""
        inputs, mask, labels = self.layout(embeddings, alt, captions)
        return self.decoder(inputs_embeds=inputs, attention_mask=mask, position_ids=positions(mask), labels=labels, use_cache=False).loss

    def generate(
        self,
        embeddings: Any,
        alt_texts: list[str],
        temperature: float = 0.2,
        top_p: float = 0.7,
        max_new_tokens: int | None = None,
        seed: int = 0,
        min_new_tokens: int = 0,
        kv_cache: str = "dynamic",
    ) -> list[str]:
        """One caption per image (batched, KV cache). ``temperature`` 0 is greedy.

        ``kv_cache="static"`` preallocates the cache at its full length: on a GPU the decode
        steps then keep their shapes, which measured 1.4x the images/s of the growing cache
        at the paper's size (benchmarks/RESULTS.md); the captions are the same."""
        torch = self.torch
        alt = self.alt_ids(alt_texts)
        with torch.inference_mode():
            prompt, mask = self._prompt(embeddings, alt)
            bos = self.decoder.get_input_embeddings()(torch.full((len(alt), 1), self.bos, dtype=torch.long, device=self.device))
            inputs = torch.cat([prompt, bos], dim=1)
            mask = torch.cat([mask, torch.ones((len(alt), 1), dtype=torch.long, device=self.device)], dim=1)
            options: dict[str, Any] = {
                "max_new_tokens": max_new_tokens or self.config.max_caption_tokens,
                "min_new_tokens": min_new_tokens,
                "do_sample": temperature > 0,
                "pad_token_id": self.pad,
                "eos_token_id": self.eos,
            }
            if temperature > 0:
                options.update(temperature=temperature, top_p=top_p, top_k=0)
            if kv_cache == "static":
                options["cache_implementation"] = "static"
            torch.manual_seed(seed)
            out = self.decoder.generate(inputs_embeds=inputs, attention_mask=mask, **options)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def checkpoint_folder(path: str | Path) -> Path:
    """The folder holding ``altogether.json``: the path itself, or the ``model/`` that
    ``recaption train captioner`` writes inside its output folder."""
    path = Path(path)
    for folder in (path, path / "model"):
        if (folder / CONFIG_FILE).exists():
            return folder
    raise ModelLoadError(f"'{path}' is not a captioner checkpoint: no {CONFIG_FILE} in it or in {path / 'model'} (train one with `recaption train captioner`)")
