"""vlm_caption and select, through tiny random checkpoints of each family loaded like hub ones."""

import pytest

from recaption.record import Caption, Pair
from recaption.stages.base import StageError
from tests.conftest import encode, noise_image

pytest.importorskip("transformers")
FAMILIES = ["blip-2", "llava", "llava_next", "qwen2_vl"]


def images(n):
    return [noise_image(i, (64 + 8 * i, 48)) for i in range(n)]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_batch_of_four_equals_four_single_calls(tiny_vlms, family):
    from recaption.models.captioner import Sampling
    from recaption.models.vlm import TransformersCaptioner

    captioner = TransformersCaptioner(str(tiny_vlms[family]))
    assert captioner.family == family
    prompts = [captioner.format_prompt(q) for q in ("Describe this image.", "What is it?", "Describe it", "A")]
    greedy = Sampling(max_new_tokens=6)
    batched = captioner.generate(images(4), prompts, greedy)
    single = [captioner.generate([im], [p], greedy)[0] for im, p in zip(images(4), prompts)]
    assert batched == single
    assert all(len(texts) == 1 for texts in batched)


@pytest.mark.parametrize("family", FAMILIES)
def test_n_sampled_candidates_per_image(tiny_vlms, family):
    from recaption.models.captioner import Sampling
    from recaption.models.vlm import TransformersCaptioner

    captioner = TransformersCaptioner(str(tiny_vlms[family]))
    sampling = Sampling(n=3, temperature=1.0, top_p=0.9, max_new_tokens=5, seed=1)
    out = captioner.generate(images(2), [captioner.format_prompt("Describe.")] * 2, sampling)
    assert [len(texts) for texts in out] == [3, 3]
    assert out == captioner.generate(images(2), [captioner.format_prompt("Describe.")] * 2, sampling)  # the seed fixes them


def test_prompts_take_each_familys_form(tiny_vlms):
    from recaption.models.vlm import TransformersCaptioner

    assert TransformersCaptioner(str(tiny_vlms["blip-2"])).format_prompt("What is shown?") == "Question: What is shown? Answer:"
    assert TransformersCaptioner(str(tiny_vlms["llava"])).format_prompt("Describe.") == "USER: <image>\nDescribe. ASSISTANT:"
    qwen = TransformersCaptioner(str(tiny_vlms["qwen2_vl"])).format_prompt("Describe.")
    assert qwen.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.") and qwen.endswith("assistant\n")


def test_stage_writes_candidates_with_provenance_and_tidies_them(tiny_vlms):
    from recaption.stages.caption import VlmCaption
    from recaption.stages.text import CleanText

    pairs = [Pair(f"p{i}", encode(noise_image(i)), texts=[f"IMG_{i}.jpg a red car on a road"]) for i in range(3)]
    CleanText()(pairs)
    stage = VlmCaption(model=str(tiny_vlms["llava"]), template="realign", n=2, temperature=0.8, top_p=0.9, max_new_tokens=6, names=False)
    stage(pairs)
    for pair in pairs:
        vlm = [c for c in pair.captions if c.source == "vlm:llava"]
        assert pair.scores["vlm_candidates"] == len(vlm) <= 2
        for j, cap in enumerate(vlm):
            assert cap.params["candidate"] == j and cap.params["template"] == "realign" and cap.params["temperature"] == 0.8
            assert cap.model_hash.startswith("llava@") and cap.parent == 0 and cap.round == 1
            assert "sensitive_removed" in cap.scores  # checked before it was stored
        assert next(c for c in pair.captions if c.selected).source == "alt-text"  # select: false by default


def test_bad_settings_fail_before_any_work(tmp_path):
    from recaption.stages.caption import VlmCaption

    with pytest.raises(StageError, match="temperature"):
        VlmCaption(n=5)
    with pytest.raises(StageError, match="unknown prompt field"):
        VlmCaption(prompt="Describe {image_size}")
    with pytest.raises(StageError, match="template"):
        VlmCaption(template="poetic")
    stage = VlmCaption(model=str(tmp_path / "missing"))
    with pytest.raises(StageError, match="cannot load model config"):
        stage([Pair("a", encode(noise_image(0)), texts=["x"])])
    quantised = VlmCaption(model=str(tmp_path / "missing"), quantization="8bit", device="cpu")
    with pytest.raises(StageError, match="CUDA only"):
        quantised([Pair("a", encode(noise_image(0)), texts=["x"])])


def scored_pair(alt: float, *candidates: tuple[str, float]) -> Pair:
    caps = [Caption("the alt text", "alt-text", scores={"clip_score": alt}, selected=True)]
    caps += [Caption(text, "vlm:m", round=1, parent=0, scores={"clip_score": s}) for text, s in candidates]
    return Pair("p", None, captions=caps)


def test_select_keeps_top_k_and_stores_margins():
    from recaption.stages.select import Select

    pair = scored_pair(20.0, ("a cat on a mat", 30.0), ("a dog in a park", 25.0), ("a bird", 10.0))
    Select(k=2)([pair])
    assert [c.text for c in pair.captions if c.selected] == ["a cat on a mat", "a dog in a park"]
    assert [c.scores["margin_vs_alt"] for c in pair.captions] == [0.0, 10.0, 5.0, -10.0]
    assert pair.scores["select_margin"] == 10.0
    assert pair.scores["candidates_distinct"] == 3


def test_select_keeps_the_alt_text_when_it_scores_higher():
    from recaption.stages.select import Select

    pair = scored_pair(28.0, ("a cat on a mat", 30.0), ("a dog in a park", 25.0))
    Select(k=2)([pair])
    assert [c.text for c in pair.captions if c.selected] == ["the alt text", "a cat on a mat"]
    best_is_alt = scored_pair(40.0, ("a cat on a mat", 30.0))
    Select(k=2)([best_is_alt])
    assert [c.text for c in best_is_alt.captions if c.selected] == ["the alt text"]
    assert best_is_alt.scores["select_margin"] == 0.0


def test_select_collapses_near_identical_candidates_and_measures_diversity():
    from recaption.stages.select import Select

    same = scored_pair(10.0, ("a cat on a mat", 30.0), ("A cat on a mat.", 29.0), ("a cat on the mat", 28.0), ("a dog", 20.0))
    Select(k=2, collapse=0.75)([same])
    assert [c.text for c in same.captions if c.selected] == ["a cat on a mat", "a dog"]
    assert same.captions[2].params["duplicate_of"] == 1  # the same words
    assert same.captions[3].params["duplicate_of"] == 1  # one word more: Jaccard 0.8
    assert same.scores["candidates_distinct"] == 2
    strict = scored_pair(10.0, ("a cat on a mat", 30.0), ("a cat on the mat", 28.0), ("a dog", 20.0))
    Select(k=2, collapse=0.9)([strict])
    assert [c.text for c in strict.captions if c.selected] == ["a cat on a mat", "a cat on the mat"]
    assert 0 < same.scores["candidate_diversity"] < 1
    identical = scored_pair(10.0, ("a cat", 30.0), ("a cat", 29.0))
    Select()([identical])
    assert identical.scores["candidate_diversity"] == 0.0 and identical.scores["candidates_distinct"] == 1


def test_generate_score_and_select_end_to_end(tiny_vlms, tiny_clip):
    from recaption.stages.caption import VlmCaption
    from recaption.stages.scoring import ClipScore
    from recaption.stages.select import Select
    from recaption.stages.text import CleanText

    pairs = [Pair(f"p{i}", encode(noise_image(i)), texts=["a colourful pattern"]) for i in range(2)]
    CleanText()(pairs)
    VlmCaption(model=str(tiny_vlms["blip-2"]), n=3, temperature=1.0, max_new_tokens=5, names=False)(pairs)
    ClipScore(model=str(tiny_clip), cache="none")(pairs)
    Select(k=2)(pairs)
    for pair in pairs:
        chosen = [c for c in pair.captions if c.selected]
        assert 1 <= len(chosen) <= 2
        alt = next(c for c in pair.captions if c.source == "alt-text")
        assert all(c.scores["clip_score"] >= alt.scores["clip_score"] for c in chosen)


def test_vlm_rerank_recipe_runs_from_the_cli_with_local_checkpoints(tiny_vlms, tiny_clip, tmp_path, capsys):
    import json

    from recaption.cli import main
    from tests.conftest import make_pairs_dataset, read_jsonl

    data = make_pairs_dataset(tmp_path / "in", 4)
    out = tmp_path / "out"
    rc = main([
        "run", str(data), str(out), "--recipe", "vlm-rerank", "--workers", "1", "--no-progress",
        "--set", f"vlm_caption.model={tiny_vlms['qwen2_vl']}", "--set", "vlm_caption.max_new_tokens=5",
        "--set", f"clip_score.model={tiny_clip}", "--set", f"clip_score.cache={tmp_path / 'cache'}",
        "--set", "vlm_caption.names=false",
    ])
    assert rc == 0, capsys.readouterr().err
    records = read_jsonl(out / "data" / "part-00000.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    assert len(records) + stats["rejected"] == 4
    for rec in records:
        vlm = [c for c in rec["captions"] if c["source"] == "vlm:qwen2_vl"]
        assert 1 <= len(vlm) <= 5 and all("clip_score" in c["scores"] for c in vlm)
        assert 1 <= sum(c["selected"] for c in rec["captions"]) <= 2
        assert "candidates_distinct" in rec["scores"]


def test_a_prompt_longer_than_the_models_context_is_refused_at_setup(tiny_vlms, tmp_path):
    import json
    import shutil

    from recaption.stages.caption import VlmCaption

    short = tmp_path / "short-context-llava"
    shutil.copytree(tiny_vlms["llava"], short)
    config = json.loads((short / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 40  # the image alone takes 17 tokens, the prompt ~60
    (short / "config.json").write_text(json.dumps(config))
    stage = VlmCaption(model=str(short), max_new_tokens=8)
    with pytest.raises(StageError, match=r"the prompt takes \d+ tokens with its image, and max_new_tokens adds 8: more than the 40 tokens"):
        stage.setup()
    # The same checkpoint with its real context runs.
    VlmCaption(model=str(tiny_vlms["llava"]), max_new_tokens=8).setup()
