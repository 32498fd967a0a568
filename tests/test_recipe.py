import pytest

from recaption.recipe import RecipeError, load_recipe, shipped_recipes


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


def test_shipped_recipes_are_valid():
    assert {"default", "clean"} <= set(shipped_recipes())
    default = load_recipe("default")
    assert [s.name for s in default.stages] == [
        "image_check", "clean_text", "ocr", "classify", "nsfw", "nsfw_filter",
        "compose_caption", "sensitive_check", "token_budget", "dedup",
    ]
    clean = load_recipe("clean")
    assert [s.name for s in clean.stages] == ["image_check", "clean_text", "sensitive_check", "token_budget", "dedup"]
    assert len(default.build()) == 10 and len(clean.build()) == 5


def test_unknown_stage_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nstages:\n  - image_check:\n  - clen_text:\n      keep_empty: true\n")
    with pytest.raises(RecipeError, match=r"r.yaml line 4: unknown stage 'clen_text' \(did you mean 'clean_text'\?\)"):
        load_recipe(path)


def test_bad_argument_names_the_line(tmp_path):
    path = write(tmp_path, "stages:\n  - image_check:\n      min_size: 10\n")
    with pytest.raises(RecipeError, match=r"line 2: stage 'image_check' has no argument 'min_size' \(did you mean 'min_side'\?\)"):
        load_recipe(path)
    path = write(tmp_path, "stages:\n  - image_check:\n      min_side: big\n")
    with pytest.raises(RecipeError, match="line 2: image_check.min_side must be int, not 'big'"):
        load_recipe(path)
    path = write(tmp_path, "stages:\n  - clean_text:\n      disable: [emojis]\n")
    with pytest.raises(RecipeError, match="line 2: clean_text.disable: unknown cleaning rule"):
        load_recipe(path)


def test_malformed_yaml_and_shapes(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "stages: [\n"))
    with pytest.raises(RecipeError, match="non-empty list"):
        load_recipe(write(tmp_path, "stages: {}\n"))
    with pytest.raises(RecipeError, match="line 1: unknown key 'stagez'"):
        load_recipe(write(tmp_path, "stagez: []\n"))
    with pytest.raises(RecipeError, match="no recipe 'nope'"):
        load_recipe("nope")


def test_set_overrides_arguments_and_is_validated():
    recipe = load_recipe("default", ["image_check.min_side=128", "dedup.text_action=reject", "clean_text.disable=[emoji]"])
    args = {s.name: s.args for s in recipe.stages}
    assert args["image_check"]["min_side"] == 128
    assert args["dedup"]["text_action"] == "reject"
    assert args["clean_text"]["disable"] == ["emoji"]
    with pytest.raises(RecipeError, match="--set dedup.text_action"):
        load_recipe("default", ["dedup.text_action=drop"])
    with pytest.raises(RecipeError, match="expected STAGE.ARG=VALUE"):
        load_recipe("default", ["min_side=3"])
    with pytest.raises(RecipeError, match="did you mean 'token_budget'"):
        load_recipe("default", ["token_budgets.max_tokens=3"])
