"""`recaption train captioner`: config, data, schedule, the loop, checkpoints and resume."""

import json

import numpy as np
import pytest

from recaption.cli import main
from recaption.train.config import ConfigError, load_train_config
from recaption.train.data import Example
from recaption.train.loop import TrainError, batch_indices, lr_factor, param_groups, prompts_for, train_captioner
from tests.conftest import captioner_config, noise_image, write_jsonl

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_unknown_keys_and_bad_values_are_errors_before_any_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata: d.jsonl\nbatch_sise: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_train_config(path)
    path.write_text("name: x\ndata: d.jsonl\nmodel:\n  visual_token: 4\n")
    with pytest.raises(ConfigError, match="model: unknown key 'visual_token'"):
        load_train_config(path)
    path.write_text("name: x\ndata: d.jsonl\nkind: distill\n")
    with pytest.raises(ConfigError, match="kind must be one of"):
        load_train_config(path)
    path.write_text("name: x\ndata: d.jsonl\n")
    config = load_train_config(path, ["steps=7", "model.visual_tokens=8", "model.train_decoder=false"])
    assert (config.steps, config.model.visual_tokens, config.model.train_decoder, config.output) == (7, 8, False, "runs/x")


def test_schedule_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, 10, 100, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_no_weight_decay_on_norms_and_biases():
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, rest = param_groups(list(layer.named_parameters()), 0.2)
    assert decay["weight_decay"] == 0.2 and [p.shape for p in decay["params"]] == [(4, 4)]
    assert rest["weight_decay"] == 0.0 and len(rest["params"]) == 3  # linear bias, norm weight and bias


def test_every_example_once_per_epoch_in_a_seeded_order():
    epoch = np.concatenate([batch_indices(s, m, 12, 3, 2, seed=5) for s in range(2) for m in range(2)])
    assert sorted(epoch) == list(range(12))
    assert (batch_indices(1, 1, 12, 3, 2, seed=5) == batch_indices(1, 1, 12, 3, 2, seed=5)).all()


def test_alt_text_dropout_rate():
    examples = [Example("a", "the caption", ["an alt-text"])] * 2000 + [Example("b", "the caption", [])]
    prompts = prompts_for(examples, np.random.default_rng(0), 0.5)
    assert 0.45 < prompts[:2000].count("") / 2000 < 0.55 and prompts[-1] == ""


def test_training_lowers_the_loss_and_writes_a_model(tiny_captioner):
    log = [json.loads(line) for line in open(tiny_captioner / "train_log.jsonl")]
    assert [row["step"] for row in log] == list(range(1, 41))
    assert np.mean([r["loss"] for r in log[-3:]]) < np.mean([r["loss"] for r in log[:3]])
    assert (tiny_captioner / "model" / "altogether.json").exists()
    config = json.loads((tiny_captioner / "model" / "altogether.json").read_text())
    assert config["encoder_hash"].startswith("clip@") and config["embed_dim"] == 16
    assert sorted(p.name for p in (tiny_captioner / "checkpoints").iterdir()) == ["step-0000015", "step-0000030"]


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_clip, tiny_opt, tmp_path, monkeypatch):
    from recaption.train import loop

    whole = load_train_config(captioner_config(tmp_path / "a", tiny_clip, tiny_opt, steps=6, save_every=3))
    broken = load_train_config(captioner_config(tmp_path / "b", tiny_clip, tiny_opt, steps=6, save_every=3))
    train_captioner(whole, progress=False)
    calls = {"n": 0}
    real = loop.prompts_for

    def dies_at_step_five(*args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(loop, "prompts_for", dies_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        train_captioner(broken, progress=False)
    assert not (tmp_path / "b" / "run" / "model").exists()
    monkeypatch.setattr(loop, "prompts_for", real)
    train_captioner(broken, progress=False)  # resumes from step 3
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / x / "run" / "model" / "mapper.safetensors")) for x in "ab")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    # A planted trainer state that would run code when unpickled is refused, not run.
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    newest = sorted((tmp_path / "b" / "run" / "checkpoints").glob("step-*"))[-1]
    torch.save({"step": Payload()}, newest / "trainer.pt")
    (tmp_path / "b" / "run" / "model").rename(tmp_path / "b" / "old-model")
    with pytest.raises(TrainError, match="not a trainer state"):
        train_captioner(broken, progress=False)
    assert not (tmp_path / "pwned").exists()


def test_finetuning_from_annotated_records_skips_broken_ones(tiny_captioner, tiny_clip, tiny_opt, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    records = []
    for i in range(6):
        noise_image(i).save(tmp_path / "images" / f"{i}.jpg")
        records.append({"image": f"images/{i}.jpg", "alt_text": f"cat {i}", "caption": f"a photo of a cat on a sofa {i}"})
    records += ["{broken", {"image": "images/0.jpg", "alt_text": "x"}, {"image": "images/gone.jpg", "alt_text": "", "caption": "a cat"}]
    write_jsonl(tmp_path / "ft.jsonl", records)
    config = captioner_config(tmp_path, tiny_clip, tiny_opt, kind="finetune", data=str(tmp_path / "ft.jsonl"), init=str(tiny_captioner), steps=3, output=str(tmp_path / "ft"))
    assert main(["train", "captioner", str(config), "--no-progress"]) == 0
    assert "captioner saved in" in capsys.readouterr().out
    skipped = [json.loads(line) for line in open(tmp_path / "ft" / "skipped.jsonl")]
    assert sorted(s["reason"] for s in skipped) == ["malformed_json", "missing_field", "unreadable_image"]
    assert json.loads((tmp_path / "ft" / "model" / "training.json").read_text())["examples"] == 6


def test_cli_errors_are_clear(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(f"name: x\ndata: {tmp_path / 'none.jsonl'}\noutput: {tmp_path / 'out'}\nmodel:\n  encoder: {tmp_path / 'no-clip'}\n")
    assert main(["train", "captioner", str(tmp_path / "c.yaml"), "--no-progress"]) == 1
    assert "cannot load CLIP processor" in capsys.readouterr().err
    assert main(["train", "captioner", str(tmp_path / "c.yaml"), "--set", "stepz=3"]) == 2
