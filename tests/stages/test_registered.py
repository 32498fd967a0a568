"""Every registered stage, walked: what it reads is made by some stage (or an input holds it), a
model stage reads checked images, and where it runs is declared; and the Ray executor places a
stage from what it declares, the recipe's ray: section overriding."""

import pytest

from recaption.recipe import RecipeError, load_recipe
from recaption.runners.ray_data import Step, place
from recaption.runners.shards import RunError
from recaption.stages import STAGES
from recaption.stages.base import CHECKED_IMAGES, INPUT_FACTS, Stage, register
from recaption.stages.caption import VlmCaption


def test_every_registered_stage_reads_what_some_stage_makes_and_declares_where_it_runs():
    made = {fact for cls in STAGES.values() for fact in cls.provides} | set(INPUT_FACTS)
    assert len(STAGES) >= 17
    for name, cls in STAGES.items():
        assert cls.name == name
        for group in cls.requires:
            assert set(group) & made, f"{name} requires {group}, which no stage makes"
        wants = cls.resources
        assert wants.cpus > 0 and wants.gpus >= 0 and wants.memory_gb >= 0, name
        if wants.loads_model:  # every model stage decodes the images the image check let through
            assert CHECKED_IMAGES in cls.requires, f"{name} loads a model on images: it requires image:checked"
        if wants.gpus:
            assert wants.loads_model, name
    gpu_stages = {name for name, cls in STAGES.items() if cls.resources.gpus}
    assert {"vlm_caption", "altogether_caption", "clip_score", "image_embed"} <= gpu_stages


def test_a_requires_no_stage_makes_is_refused_naming_the_stage(tmp_path):
    saved = dict(STAGES)

    @register
    class ReadsATypo(Stage):
        name = "reads_a_typo"
        requires = (("score:nfsw",),)

        def process(self, batch):
            pass

    try:
        path = tmp_path / "r.yaml"
        path.write_text("stages:\n  - image_check:\n  - reads_a_typo:\n")
        with pytest.raises(RecipeError, match=r"r.yaml line 3: reads_a_typo reads score:nfsw, which no stage makes and no input holds \(.*ReadsATypo\)"):
            load_recipe(str(path))
    finally:
        STAGES.clear()
        STAGES.update(saved)


def test_a_model_stage_before_the_image_check_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stages:\n  - ocr:\n  - image_check:\n")
    with pytest.raises(RecipeError, match="ocr reads image:checked, which image_check makes later in the recipe"):
        load_recipe(str(path))


def test_a_captioner_takes_a_gpu_where_the_cluster_has_one_and_the_cpu_where_not():
    vlm = VlmCaption(model="any/vlm")
    gpu_cluster, cpu_cluster = {"CPU": 16.0, "GPU": 2.0}, {"CPU": 16.0}
    on_gpu = place(Step([0], True, {}), [vlm], gpu_cluster)
    assert (on_gpu.num_gpus, on_gpu.note) == (1, "")
    on_cpu = place(Step([0], True, {}), [vlm], cpu_cluster)
    assert on_cpu.num_gpus == 0 and on_cpu.note == "vlm_caption runs on the CPU: it would take 1 GPU and the Ray cluster has 0"
    # the recipe's ray: section overrides; a GPU it asks for and the cluster lacks stops the run
    assert place(Step([0], True, {"num_gpus": 0, "num_cpus": 4}), [vlm], gpu_cluster).num_gpus == 0
    assert place(Step([0], True, {"num_cpus": 4}), [vlm], gpu_cluster).num_cpus == 4
    with pytest.raises(RunError, match="ray.vlm_caption.num_gpus is 1 but the Ray cluster has 0 GPUs"):
        place(Step([0], True, {"num_gpus": 1}), [vlm], cpu_cluster)
    # a captioner that calls a server, or is told to use the CPU, wants no GPU
    assert place(Step([0], True, {}), [VlmCaption(model="m", backend="openai", base_url="http://127.0.0.1:1")], gpu_cluster).num_gpus == 0
    assert place(Step([0], True, {}), [VlmCaption(model="m", device="cpu")], gpu_cluster).num_gpus == 0
    # stages sharing an actor take the most any of them wants
    ocr = STAGES["ocr"]()
    assert place(Step([0, 1], True, {}), [ocr, vlm], gpu_cluster).num_gpus == 1
