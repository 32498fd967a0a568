"""The realign world's own models, built from scratch and saved as Hugging Face checkpoints so
that everything downstream loads them the way it loads a user's:

- a tiny CLIP (``transformers.CLIPModel``, CLIP's real tokenizer) trained contrastively on the
  world's images and reference captions: the frozen encoder of the captioner, and the scorer
  of the table's CLIPScore column;
- a tiny OPT decoder, random, with a byte-level BPE tokenizer trained on the world's texts
  (the made-up names split into their syllables, so a name never seen whole can be copied).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from recaption.bench.world import SYLLABLES
from recaption.text.clip_tokens import hf_clip_tokenizer

CLIP_WIDTH = 64  # two CPU cores train it in about a minute
DECODER_WIDTH = 128


def clip_from_scratch(image_size: int, patch_size: int, width: int, layers: int, heads: int, projection_dim: int):
    """A random ``CLIPModel`` with CLIP's real tokenizer and a PIL image processor."""
    import transformers as tf  # noqa: PLC0415 - transformers only when the benchmark trains

    tok = hf_clip_tokenizer()
    side = {"height": image_size, "width": image_size}
    processor = tf.CLIPProcessor(image_processor=tf.CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size=side), tokenizer=tok)
    tower = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads)
    config = tf.CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=77, **tower),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **tower),
        projection_dim=projection_dim,
    )
    return tf.CLIPModel(config), processor


def train_world_clip(folder: Path, images: list[Path], captions: list[str], steps: int, seed: int = 0, progress: bool = True) -> Path:
    import torch  # noqa: PLC0415 - torch only when the benchmark trains

    torch.manual_seed(seed)
    model, processor = clip_from_scratch(image_size=64, patch_size=16, width=CLIP_WIDTH, layers=3, heads=4, projection_dim=64)
    tok = processor.tokenizer
    pixels = processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")["pixel_values"]
    text = tok(captions, padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    rng = np.random.default_rng(seed)
    model.train()
    bar = tqdm(range(steps), desc="training the world's CLIP", unit="step", disable=not progress)
    for _ in bar:
        idx = torch.from_numpy(rng.choice(len(images), size=min(128, len(images)), replace=False))
        out = model(input_ids=text["input_ids"][idx], attention_mask=text["attention_mask"][idx], pixel_values=pixels[idx], return_loss=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        bar.set_postfix(loss=f"{out.loss.item():.3f}")
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def world_decoder(folder: Path, texts: list[str], seed: int = 0, layers: int = 4) -> Path:
    import torch  # noqa: PLC0415 - torch, transformers and tokenizers only when the benchmark trains
    import transformers as tf  # noqa: PLC0415 - as torch above
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415 - as torch above

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    # Syllables are whole tokens so that names are sequences of them; the rest is learnt.
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts + [" ".join(SYLLABLES)] * 50 + [" ".join(s.capitalize() for s in SYLLABLES)] * 50, trainer)
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = tf.OPTConfig(
        vocab_size=len(tok), hidden_size=DECODER_WIDTH, word_embed_proj_dim=DECODER_WIDTH, ffn_dim=4 * DECODER_WIDTH, num_hidden_layers=layers, num_attention_heads=4,
        max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    tf.OPTForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
