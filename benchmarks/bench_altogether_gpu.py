"""GPU throughput of the re-aligning captioner at the paper's size, with random weights.

The paper reports 15.6 images/s on one A100 for: a ViT-H/14 image encoder (MetaCLIP, 224 px,
1024-d embedding), 40 visual tokens, an OPT-1.3B decoder, 128 alt-text tokens and up to 256
generated tokens (a 424-token sequence). This builds those shapes with random weights on the
GPU and times images/s end to end on the GPU side (encoder forward, mapping network,
``AltogetherCaptioner.generate`` with its KV cache), every image given 128 alt-text tokens and
forced to write 256 tokens. Target: 3x the paper's figure (46.8 images/s) on one H100.

    python -m benchmarks.bench_altogether_gpu --batches 64,128,256 --dtype bfloat16 [--static-cache]

``--size tiny`` runs the same code with small shapes on the CPU (a check of the script).
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.harness import machine

PAPER_IMAGES_PER_S = 15.6


def build(size: str, device: str, dtype, alt_tokens: int = 128):
    import torch
    import transformers as tf

    from recaption.models.altogether import AltogetherCaptioner, AltogetherConfig, build_mapper
    from tests.tiny_models import bpe_tokenizer

    tok = bpe_tokenizer()
    if size == "real":
        vision = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224, patch_size=14, projection_dim=1024)
        text = dict(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32, word_embed_proj_dim=2048, vocab_size=50272)
        mapper = dict(layers=8, heads=16)
    else:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
        text = dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, word_embed_proj_dim=32, vocab_size=len(tok))
        mapper = dict(layers=2, heads=2)
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        encoder = tf.CLIPVisionModelWithProjection(tf.CLIPVisionConfig(**vision)).to(dtype).eval()
        decoder = tf.OPTForCausalLM(tf.OPTConfig(max_position_embeddings=2048, dropout=0.0, **text, **ids)).to(dtype).eval()
        width = text["word_embed_proj_dim"]
        net = build_mapper(vision["projection_dim"], width, width, 40, mapper["layers"], mapper["heads"]).to(dtype).eval()
    config = AltogetherConfig(encoder="random", decoder="random", visual_tokens=40, mapper_layers=mapper["layers"], mapper_heads=mapper["heads"], max_alt_tokens=alt_tokens, max_caption_tokens=256)
    return encoder, AltogetherCaptioner(config, net, decoder, tok), vision["image_size"]


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--batches", default="32,64,128")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--alt-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per size, after one warm-up")
    parser.add_argument("--static-cache", action="store_true", help="generate with a static KV cache (CUDA graphs friendly)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype) if device == "cuda" else torch.float32
    gpu = torch.cuda.get_device_name() if device == "cuda" else "no GPU"
    print(f"machine: {machine()}; {gpu}; torch {torch.__version__}; {args.dtype if device == 'cuda' else 'float32'}")
    encoder, captioner, side = build(args.size, device, dtype, args.alt_tokens)
    if args.static_cache:
        captioner.decoder.generation_config.cache_implementation = "static"
    # Alt-texts of at least ``alt_tokens`` tokens, cut to exactly that many by max_alt_tokens.
    word_ids = captioner.tokenizer(" cat", add_special_tokens=False)["input_ids"]
    alt_text = captioner.tokenizer.decode(word_ids * args.alt_tokens)
    alt_len = len(captioner.alt_ids([alt_text])[0])
    for batch in map(int, args.batches.split(",")):
        pixels = torch.randn(batch, 3, side, side, device=device, dtype=dtype)

        def run(pixels=pixels, batch=batch):
            with torch.inference_mode():
                emb = encoder(pixel_values=pixels).image_embeds
                emb = emb / emb.norm(dim=-1, keepdim=True)
            return captioner.generate(emb, [alt_text] * batch, temperature=0.2, top_p=0.7, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

        try:
            run()
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.repeats):
                run()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / args.repeats
            row = {
                "batch": batch, "alt_tokens": alt_len, "new_tokens": args.new_tokens, "sequence": 40 + alt_len + 1 + args.new_tokens,
                "images_per_s": round(batch / seconds, 2), "vs_paper_a100": round(batch / seconds / PAPER_IMAGES_PER_S, 2),
                "static_cache": args.static_cache, "size": args.size,
            }
            if device == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        except torch.OutOfMemoryError as exc:
            row = {"batch": batch, "error": f"out of memory: {str(exc)[:120]}"}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
