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


@pytest.mark.parametrize("stages,message", [
    ("  - compose_caption:\n  - image_check:\n  - clean_text:\n", r"line 2: compose_caption reads .*captions:alt-text.*, which clean_text makes later in the recipe: put compose_caption after clean_text"),
    ("  - nsfw_filter:\n  - nsfw:\n", r"nsfw_filter reads score:nsfw, which nsfw makes later"),
    ("  - clean_text:\n  - select:\n  - clip_score:\n", r"select reads caption_score:clip_score, which clip_score makes later"),
    ("  - dedup:\n  - image_check:\n", r"dedup reads score:sha256, which image_check makes later"),
    ("  - score_filter:\n      score: nsfw\n      max: 0.5\n  - nsfw:\n", r"score_filter reads score:nsfw, which nsfw makes later"),
])
def test_a_stage_before_the_one_that_makes_what_it_reads_is_refused(tmp_path, stages, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, "stages:\n" + stages))


def test_what_no_stage_of_the_recipe_makes_may_come_from_the_input(tmp_path):
    # Score once, decide many times: a run's output already holds its scores.
    recipe = load_recipe(write(tmp_path, "stages:\n  - select:\n  - score_filter:\n      score: width\n      min: 64\n  - dedup:\n"))
    assert [s.name for s in recipe.build()] == ["select", "score_filter", "dedup"]
    assert load_recipe(write(tmp_path, "stages:\n  - dedup:\n      exact_image: false\n      near_image: false\n  - image_check:\n"))  # no image dedup: no order


def test_image_check_hashes_crop_windows_only_for_a_dedup_that_compares_them():
    from recaption.record import Pair
    from tests.conftest import encode, noise_image

    def windows_made(recipe):
        check = next(s for s in recipe.build() if s.name == "image_check")
        pair = Pair("a", encode(noise_image(1)))
        check([pair])
        return check.crop_windows, "phash_windows" in pair.scores

    assert windows_made(load_recipe("clean")) == (False, False)  # 1.2 ms an image no stage reads
    assert windows_made(load_recipe("clean", ["dedup.near_crops=true"])) == (True, True)
    assert windows_made(load_recipe("clean", ["image_check.crop_windows=true"])) == (True, True)  # asked for: kept
