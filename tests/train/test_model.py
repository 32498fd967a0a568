"""The captioner model: sequence layout, loss mask, the published code's faults avoided,
batched generation, save and load."""

import pytest

from recaption.models.altogether import AltogetherCaptioner, AltogetherConfig, checkpoint_folder
from recaption.models.hf import ModelLoadError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ALTS = ["a red car on a road", "", "a photo of a cat on a sofa in the park"]


def captioner(opt, **settings) -> AltogetherCaptioner:
    config = AltogetherConfig(encoder="unused", decoder=str(opt), visual_tokens=4, mapper_layers=2, mapper_heads=2, max_alt_tokens=8, max_caption_tokens=10, **settings)
    return AltogetherCaptioner.new(config, embed_dim=16)


def embeddings(n: int, seed: int = 0):
    return torch.nn.functional.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_loss_falls_on_caption_tokens_and_eos_only(tiny_opt):
    model = captioner(tiny_opt)
    alt = model.alt_ids(["a red car", ""])
    caps = model.caption_ids(["a car", "a dog running in the park"])
    inputs, mask, labels = model.layout(embeddings(2), alt, caps)
    prompt = 4 + max(len(a) for a in alt)
    assert inputs.shape[:2] == mask.shape == labels.shape == (2, prompt + max(len(c) for c in caps))
    for row, (a, c) in enumerate(zip(alt, caps)):
        assert (labels[row, :prompt] == -100).all()  # visual and alt-text tokens: no loss
        assert labels[row, prompt] == -100  # the BOS that opens the caption is given, not learnt
        assert labels[row, prompt + 1 : prompt + len(c)].tolist() == c[1:]  # caption tokens and EOS
        assert (labels[row, prompt + len(c) :] == -100).all()  # padding
        # left-padded alt-text: padding sits between the visual tokens and the alt-text
        assert mask[row].tolist() == [1] * 4 + [0] * (prompt - 4 - len(a)) + [1] * len(a) + [1] * len(c) + [0] * (labels.shape[1] - prompt - len(c))


def test_a_sample_that_fills_the_whole_sequence_still_trains(tiny_opt):
    model = captioner(tiny_opt)
    long = "a dog running in the park and a cat on a sofa with a cup of coffee " * 3
    alt, caps = model.alt_ids([long]), model.caption_ids([long])
    assert len(alt[0]) == 8 and len(caps[0]) == 11  # both at their limits: no padding anywhere
    inputs, mask, labels = model.layout(embeddings(1), alt, caps)
    assert bool(mask.all()) and int((labels != -100).sum()) == 10  # nine caption tokens and EOS
    model.train()
    loss = model.loss(embeddings(1), alt, caps)
    loss.backward()
    assert torch.isfinite(loss) and model.mapper.project.weight.grad.abs().sum() > 0


def test_a_truncated_caption_keeps_its_eos(tiny_opt):
    model = captioner(tiny_opt)
    ids = model.caption_ids(["a dog running in the park and a cat on a sofa with a cup of coffee"])[0]
    assert ids[0] == model.bos and ids[-1] == model.eos and len(ids) == 1 + model.config.max_caption_tokens


def test_greedy_batch_equals_single_calls_with_alt_texts_of_every_length(tiny_opt):
    model = captioner(tiny_opt)
    model.train(False)
    vectors = embeddings(3)
    batched = model.generate(vectors, ALTS, temperature=0, max_new_tokens=6, min_new_tokens=6)
    single = [model.generate(vectors[i : i + 1], [alt], temperature=0, max_new_tokens=6, min_new_tokens=6)[0] for i, alt in enumerate(ALTS)]
    assert batched == single and all(batched)


def test_sampling_is_fixed_by_the_seed(tiny_opt):
    model = captioner(tiny_opt)
    model.train(False)
    first = model.generate(embeddings(3), ALTS, temperature=1.0, top_p=0.9, max_new_tokens=6, min_new_tokens=3, seed=3)
    assert first == model.generate(embeddings(3), ALTS, temperature=1.0, top_p=0.9, max_new_tokens=6, min_new_tokens=3, seed=3)


def test_saved_and_loaded_back_it_writes_the_same_captions(tiny_opt, tmp_path):
    model = captioner(tiny_opt)
    model.train(False)
    before = model.generate(embeddings(3), ALTS, temperature=0, max_new_tokens=5, min_new_tokens=5)
    model.save(tmp_path / "out" / "model")
    again = AltogetherCaptioner.load(tmp_path / "out")  # the training output folder finds its model/
    again.train(False)
    assert again.generate(embeddings(3), ALTS, temperature=0, max_new_tokens=5, min_new_tokens=5) == before
    assert (tmp_path / "out" / "model" / "decoder" / "config.json").exists()


def test_clipcap_mode_trains_only_the_mapper_and_saves_no_decoder_copy(tiny_opt, tmp_path):
    model = captioner(tiny_opt, train_decoder=False)
    model.train()
    assert {name.split(".")[0] for name, _ in model.trainable_parameters()} == {"mapper"}
    assert not any(p.requires_grad for p in model.decoder.parameters())
    model.save(tmp_path / "clipcap")
    assert not (tmp_path / "clipcap" / "decoder").exists()
    assert AltogetherCaptioner.load(tmp_path / "clipcap").config.decoder == str(tiny_opt)


def test_a_trained_decoder_stays_in_checkpoints_when_training_goes_on_frozen(tiny_opt, tmp_path):
    model = captioner(tiny_opt)
    with torch.no_grad():
        model.decoder.get_input_embeddings().weight.add_(1.0)  # as if pre-training had changed it
    model.save(tmp_path / "pretrained")
    again = AltogetherCaptioner.load(tmp_path / "pretrained")
    again.config.train_decoder = False  # fine-tune the mapper alone
    again.save(tmp_path / "finetuned")
    loaded = AltogetherCaptioner.load(tmp_path / "finetuned")
    assert torch.equal(loaded.decoder.get_input_embeddings().weight, model.decoder.get_input_embeddings().weight)


def test_a_folder_that_is_no_checkpoint_says_so(tmp_path):
    with pytest.raises(ModelLoadError, match="not a captioner checkpoint"):
        checkpoint_folder(tmp_path)
