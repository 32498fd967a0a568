"""Tiny random checkpoints of the real model classes, built offline and saved with
``save_pretrained``, so tests (and the CPU benchmark) load them through the same
``from_pretrained`` path that users take with hub ids.

Tokenizers: CLIP's is the real one (the merge table that ships with recaption); SigLIP gets a
SentencePiece model and the VLMs a byte-level BPE, trained here on a few sentences, with the
special tokens each family uses.
Qwen2-VL's processor needs torchvision for its video half, which this machine lacks, so its
image processor and tokenizer are saved on their own, as the captioner's fallback expects.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CORPUS = [
    "a photo of a cat on a sofa", "a dog running in the park", "USER: describe the image ASSISTANT: a red car",
    "the image shows a cup of coffee", "Question: what is in the picture? Answer: a horse in a field",
]
LLAVA_CHAT = (
    "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bpe_tokenizer(chat_template: str | None = None):
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS * 20, trainer)
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.chat_template = chat_template
    return tok


def _save(folder: Path, model, processor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def hub_vision_tower_names(folder: Path) -> None:
    """Rename the saved vision tower's weights the way the hub's LLaVA checkpoints name them
    (``vision_tower.vision_model.*``): transformers 5 saves ``vision_tower.embeddings.*``,
    which it reads back but vLLM refuses. transformers reads the hub's names too."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    renamed = {
        (k.replace("vision_tower.", "vision_tower.vision_model.", 1) if "vision_tower." in k and "vision_model." not in k else k): v
        for k, v in tensors.items()
    }
    save_file(renamed, str(path), metadata={"format": "pt"})


def make_clip(folder: Path, seed: int = 0, width: int = 32) -> Path:
    import torch

    from recaption.bench.world_models import clip_from_scratch

    torch.manual_seed(seed)
    model, processor = clip_from_scratch(image_size=32, patch_size=8, width=width, layers=2, heads=2, projection_dim=16)
    return _save(folder, model, processor)


def make_siglip(folder: Path, seed: int = 0, width: int = 32) -> Path:
    """SigLIP's tokenizer is a SentencePiece model: a tiny unigram one is trained here."""
    import os

    import sentencepiece as spm
    import torch
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_prefix=str(folder / "spiece"), vocab_size=60, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, logstream=open(os.devnull, "w"),
    )
    tok = tf.SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=16)
    layers = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2)
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=None, eos_token_id=tok.eos_token_id)
    config = tf.SiglipConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=16, **ids, **layers),
        vision_config=dict(image_size=32, patch_size=8, **layers),
    )
    torch.manual_seed(seed)
    processor = tf.SiglipProcessor(image_processor=tf.SiglipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok)
    return _save(folder, tf.SiglipModel(config), processor)


def _decoder(tok, model_type: str, width: int = 32, **extra) -> dict:
    # vLLM's CPU attention wants head sizes of 32 or more: width 64 with 2 heads (tests/vllm).
    return dict(
        model_type=model_type, vocab_size=len(tok), hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **extra,
    )


VISION = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def make_blip2(folder: Path, seed: int = 0, width: int = 32) -> Path:
    import torch
    import transformers as tf

    tok = bpe_tokenizer()
    config = tf.Blip2Config(
        vision_config={k: v for k, v in VISION.items() if k != "model_type"},
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=32, vocab_size=len(tok)),
        text_config=_decoder(tok, "opt", width, ffn_dim=2 * width, word_embed_proj_dim=width),
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    processor = tf.Blip2Processor(image_processor=tf.BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok, num_query_tokens=4)
    return _save(folder, tf.Blip2ForConditionalGeneration(config), processor)


def make_llava(folder: Path, seed: int = 0, next_: bool = False, width: int = 32) -> Path:
    import torch
    import transformers as tf

    tok = bpe_tokenizer(LLAVA_CHAT)
    common = dict(
        vision_config=VISION, text_config=_decoder(tok, "llama", width, intermediate_size=2 * width, num_key_value_heads=2),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
    )
    # CLIP's class token is one more image feature than patches: real LLaVA processors say so too.
    processor_args = dict(tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", chat_template=LLAVA_CHAT, num_additional_image_tokens=1)
    torch.manual_seed(seed)
    if next_:
        grid = [[32, 64], [64, 32], [64, 64]]
        image_processor = tf.LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=grid)
        model = tf.LlavaNextForConditionalGeneration(tf.LlavaNextConfig(image_grid_pinpoints=grid, **common))
        _save(folder, model, tf.LlavaNextProcessor(image_processor=image_processor, **processor_args))
    else:
        image_processor = tf.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        model = tf.LlavaForConditionalGeneration(tf.LlavaConfig(projector_hidden_act="gelu", **common))
        _save(folder, model, tf.LlavaProcessor(image_processor=image_processor, **processor_args))
    hub_vision_tower_names(folder)
    return folder


def make_qwen2_vl(folder: Path, seed: int = 0, width: int = 32) -> Path:
    import torch
    import transformers as tf

    tok = bpe_tokenizer(QWEN_CHAT)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    text = _decoder(tok, "qwen2_vl_text", width, intermediate_size=2 * width, num_key_value_heads=2)
    text.pop("model_type")
    quarter = width // 16  # the sections split half a head (width / 2 heads / 2): [2, 3, 3] at 32, [4, 6, 6] at 64
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [quarter, (3 * quarter) // 2, (3 * quarter) // 2]}
    config = tf.Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=2, embed_dim=32, hidden_size=width, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tf.Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    tf.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=56 * 56 * 4, patch_size=14, merge_size=2).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_opt(folder: Path, seed: int = 0, width: int = 32) -> Path:
    """A tiny OPT causal LM (the Altogether captioner's decoder family) with its tokenizer."""
    import torch
    import transformers as tf

    tok = bpe_tokenizer()
    text = _decoder(tok, "opt", ffn_dim=2 * width, word_embed_proj_dim=width)
    text.pop("model_type")
    text["hidden_size"] = width
    torch.manual_seed(seed)
    return _save(folder, tf.OPTForCausalLM(tf.OPTConfig(**text)), tok)
