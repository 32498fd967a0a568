"""altogether_caption: a captioner trained by `recaption train captioner`, in recipes and rounds."""

import json

import pytest

from recaption.cli import main
from recaption.record import Pair
from recaption.stages.base import StageError
from recaption.stages.text import CleanText
from tests.conftest import encode, image_pairs, noise_image

pytest.importorskip("transformers")


def pairs(n: int) -> list[Pair]:
    out = [Pair(f"img-{i}", encode(noise_image(i)), texts=[f"cat {i}"]) for i in range(n)]
    CleanText()(out)
    return out


def test_rounds_chain_each_caption_to_the_one_it_re_aligned(tiny_captioner):
    from recaption.stages.caption import AltogetherCaption

    batch = pairs(3) + [Pair("broken", b"not an image", texts=["a cat"])]
    CleanText()(batch[-1:])
    stage = AltogetherCaption(checkpoint=str(tiny_captioner), rounds=2, max_new_tokens=8, names=False, cache="none", select=True)
    stage(batch)
    assert batch[-1].reject.stage == "altogether_caption" and batch[-1].reject.reason == "unreadable_image"
    for pair in batch[:3]:
        made = [c for c in pair.captions if c.source == "altogether:run"]
        assert [c.round for c in made] == [1, 2]
        assert made[0].parent == 0 and pair.captions[made[1].parent] is made[0]  # round 2 re-aligned round 1
        assert made[0].params == {"alt_text": True, "temperature": 0.2, "top_p": 0.7, "max_new_tokens": 8, "seed": 0}
        assert made[0].model_hash.startswith("model@") and "sensitive_removed" in made[0].scores
        assert [c.selected for c in pair.captions] == [False, False, True]  # the last round is the training caption


def test_without_alt_text_the_first_round_has_no_parent_and_the_alt_text_stays_selected(tiny_captioner):
    from recaption.stages.caption import AltogetherCaption

    batch = pairs(2)
    AltogetherCaption(checkpoint=str(tiny_captioner / "model"), alt_text=False, temperature=0, max_new_tokens=6, names=False, cache="none")(batch)
    for pair in batch:
        made = [c for c in pair.captions if c.source.startswith("altogether:")]
        assert len(made) == 1 and made[0].parent is None and made[0].params["alt_text"] is False
        assert next(c for c in pair.captions if c.selected).source == "alt-text"


def test_the_decoder_reads_the_alt_text(tiny_captioner):
    import torch

    from recaption.models.altogether import AltogetherCaptioner

    model = AltogetherCaptioner.load(tiny_captioner)
    model.train(False)
    vectors = torch.nn.functional.normalize(torch.randn(1, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    caption = model.caption_ids(["a photo of a cat on a sofa 3"])
    with torch.no_grad():
        with_alt, without = (model.loss(vectors, model.alt_ids([alt]), caption).item() for alt in ("cat 3", ""))
    assert with_alt != pytest.approx(without, abs=1e-4)


def test_a_missing_checkpoint_is_a_clear_error(tmp_path):
    from recaption.stages.caption import AltogetherCaption

    with pytest.raises(StageError, match="not a captioner checkpoint"):
        AltogetherCaption(checkpoint=str(tmp_path / "nothing"))(pairs(1))
    with pytest.raises(StageError, match="top_p"):
        AltogetherCaption(top_p=0)


def test_the_altogether_recipe_runs_from_the_cli(tiny_captioner, tiny_clip, tmp_path, capsys):
    image_pairs(tmp_path, [[f"IMG_{i}.jpg cat {i}"] for i in range(4)], size=(96, 96))
    settings = [f"altogether_caption.checkpoint={tiny_captioner}", f"clip_score.model={tiny_clip}", "altogether_caption.cache=none", "clip_score.cache=none", "altogether_caption.max_new_tokens=8"]
    args = ["run", str(tmp_path / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "altogether", "--workers", "1", "--no-progress"]
    assert main(args + [x for s in settings for x in ("--set", s)]) == 0
    rows = [json.loads(line) for f in sorted((tmp_path / "out" / "data").glob("*.jsonl")) for line in open(f)]
    rejected = sum(1 for f in (tmp_path / "out" / "rejects").glob("*.jsonl") for _ in open(f))
    assert len(rows) + rejected == 4
    for row in rows:
        sources = [c["source"] for c in row["captions"]]
        assert "altogether:run" in sources and all("clip_score" in c["scores"] for c in row["captions"])


def test_a_static_kv_cache_writes_the_same_captions(tiny_captioner):
    from recaption.stages.caption import AltogetherCaption

    def captions(kv_cache):
        batch = pairs(3)
        stage = AltogetherCaption(checkpoint=str(tiny_captioner), temperature=0, max_new_tokens=8, names=False, cache="none", kv_cache=kv_cache)
        stage(batch)
        return stage, [[c.text for c in p.captions if c.source == "altogether:run"] for p in batch]

    auto, expected = captions("auto")
    assert auto.kv_cache_used == "dynamic"  # the CPU keeps the growing cache
    static, got = captions("static")
    assert static.kv_cache_used == "static" and got == expected and all(expected)
    with pytest.raises(StageError, match="kv_cache"):
        AltogetherCaption(kv_cache="paged")
