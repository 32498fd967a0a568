import gzip
from importlib import resources

import pytest

from recaption.text.clip_tokens import CONTEXT_LENGTH, ClipBpeTokenizer, clip_tokenizer

WEB_TEXTS = [
    "A photo of a Bentley Continental GT, 350ml bottle! IMG_2034.JPG",
    "Chelsea the tabby cat lookin at you!!! #caturday @kittyfan",
    "He's   a \"quoted\" Word—dash… and 12,345 numbers 3.14",
    "Ünïcödé ÄÖÜ ß 日本語のテキスト 😀 emoji and don't won't it'll",
    "SpaceX Falcon 9 rocket on the launch pad at Cape Canaveral before the Starlink mission, " * 3,
    "",
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    """transformers' CLIPTokenizer over the same merge table: an independent implementation."""
    transformers = pytest.importorskip("transformers")
    ours = clip_tokenizer()
    path = resources.files("recaption.text") / "data" / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    return transformers.CLIPTokenizer(vocab=ours.encoder, merges=[tuple(m.split()) for m in lines])


@pytest.mark.parametrize("text", WEB_TEXTS)
def test_token_ids_match_transformers(hf_tokenizer, text):
    ours = clip_tokenizer()
    assert [ours.sot_id, *ours.encode(text), ours.eot_id] == hf_tokenizer(text)["input_ids"]


def test_count_includes_start_and_end_tokens():
    tok = clip_tokenizer()
    assert tok.count("") == 2
    assert tok.count("a photo of a cat") == 7
    assert CONTEXT_LENGTH == 77


def test_mojibake_and_entities_are_fixed_like_openai_clip():
    # The original CLIP tokenizer runs ftfy and HTML unescaping (transformers' fast one does not).
    tok = clip_tokenizer()
    assert tok.encode("cafÃ© &amp; bar") == tok.encode("café & bar")


def test_tokenizer_is_shared_per_process():
    assert clip_tokenizer() is clip_tokenizer()
    assert isinstance(clip_tokenizer(), ClipBpeTokenizer)
