"""ARCHITECTURE.md's examples of adding a stage, an input format, a VLM family, an executor and a
metric are code: each block runs here, registers itself (or is passed to the driver), and works;
then the registries are put back."""

import re
from pathlib import Path

import pytest

from recaption.eval.evaluate import COLUMNS, METRIC_FAMILIES, EvalSettings, evaluate
from recaption.io import open_reader
from recaption.io.base import READERS, ReaderOptions
from recaption.models.vlm import FAMILIES, family_of
from recaption.recipe import load_recipe
from recaption.record import Caption, Pair
from recaption.runners.driver import RunDriver
from recaption.runners.shards import RunConfig
from recaption.stages.base import STAGES
from tests.conftest import make_pairs_dataset, run_locally

MAP = Path(__file__).resolve().parents[1] / "ARCHITECTURE.md"


def blocks() -> list[str]:
    text = MAP.read_text(encoding="utf-8")
    section = text[text.index("## Adding a piece") :]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def registries():
    saved = (dict(STAGES), dict(READERS), dict(FAMILIES), list(METRIC_FAMILIES), list(COLUMNS))
    yield
    STAGES.clear(), STAGES.update(saved[0])
    READERS.clear(), READERS.update(saved[1])
    FAMILIES.clear(), FAMILIES.update(saved[2])
    METRIC_FAMILIES[:] = saved[3]
    COLUMNS[:] = saved[4]


def test_each_example_is_one_block_that_works(registries, tmp_path):
    stage, reader, family, executor, metric = blocks()
    for code in (stage, reader, family, metric):
        exec(compile(code, str(MAP), "exec"), {})  # noqa: S102 - our own documentation
    executors: dict = {}
    exec(compile(executor, str(MAP), "exec"), executors)  # noqa: S102

    narrow, wide = Pair("a", None), Pair("b", None)
    narrow.scores["width"], wide.scores["width"] = 100, 900
    STAGES["min_width"](min_width=256)([narrow, wide])
    assert (narrow.reject.key, wide.reject) == ("min_width/too_narrow", None)

    (tmp_path / "a.tsv").write_text("x.jpg\ta red car\ny.jpg\ta blue boat\n")
    pairs = [p for r in [open_reader(tmp_path, "tsv", ReaderOptions())] for s in r.plan() for p in r.read(s)]
    assert [(p.texts, Path(p.image).name) for p in pairs] == [(["a red car"], "x.jpg"), (["a blue boat"], "y.jpg")]

    paligemma = family_of("paligemma")
    assert not paligemma.chat and paligemma.format_prompt("describe", None) == "caption en"

    COLUMNS.append(("chars", "characters"))
    pair = Pair("p", None, texts=["abcd"], captions=[Caption("abcd", "alt-text", selected=True)])
    result = evaluate([pair], EvalSettings(names=False, progress=False))
    assert result.rows["alt-text"]["chars"] == 4.0

    data = make_pairs_dataset(tmp_path / "in", 12, texts=["a pattern", "IMG_0001.JPG", "another pattern"])
    config = RunConfig(str(data), str(tmp_path / "threads"), load_recipe("clean"), reader=ReaderOptions(shard_size=4))
    on_threads = RunDriver(config, executors["ThreadExecutor"](2), show_progress=False).run()
    local = run_locally(RunConfig(str(data), str(tmp_path / "local"), load_recipe("clean"), reader=ReaderOptions(shard_size=4)))
    assert on_threads["input"] == local["input"] == 12 and on_threads["rejects_by_reason"] == local["rejects_by_reason"]
    assert [p.read_bytes() for p in sorted((tmp_path / "threads" / "data").glob("*.jsonl"))] == \
        [p.read_bytes() for p in sorted((tmp_path / "local" / "data").glob("*.jsonl"))]


HEAVY = ("torch", "transformers", "ray", "spacy", "onnxruntime", "vllm", "tokenizers", "pycocoevalcap", "rapidocr_onnxruntime", "nudenet")


def test_the_command_line_starts_without_the_heavy_dependencies():
    """ARCHITECTURE.md's rule for imports inside functions: importing the CLI, which imports every
    command's modules, and building its parser (what `recaption --help` does) load none of the
    model runtimes (a fresh interpreter, so nothing else did)."""
    import subprocess
    import sys

    code = f"import sys, recaption.cli; recaption.cli.build_parser(); print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_every_import_inside_a_function_says_why():
    package = MAP.parent / "recaption"
    bare = [f"{p.relative_to(MAP.parent)}:{n}" for p in sorted(package.rglob("*.py"))
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if "noqa: PLC0415" in line and not re.search(r"noqa: PLC0415 - \S", line)]
    assert bare == []
