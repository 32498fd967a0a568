"""Recipes: an ordered list of stages with their arguments, validated before anything runs.

A recipe is YAML::

    name: default
    stages:
      - image_check:
          min_side: 64
      - clean_text:
      - dedup:
          phash_radius: 4
    report:
      gallery: 48
    ray:                       # only `--runner ray` reads this: where each stage runs
      vlm_caption: {num_gpus: 1, concurrency: 4, batch_size: 32}

Recipes that ship with the package are found by name (``--recipe default``); any other
value is read as a path. ``--set STAGE.ARG=VALUE`` overrides an argument (the value is
read as YAML, so ``128``, ``true`` and ``[a, b]`` mean what they look like);
``--set ray.STAGE.KEY=VALUE`` a Ray placement. Every error
names the file and line (or the ``--set``) it comes from, and is raised before any work.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from recaption.errors import UsageError
from recaption.stages import STAGES, Stage, StageError
from recaption.stages.base import DEFAULT_STOP_AFTER_FAILURES, INPUT_FACTS

TOP_LEVEL_KEYS = ("name", "description", "stages", "report", "ray")
REPORT_KEYS = {"gallery": int, "examples_per_reason": int}
# Ray placement of a stage: actors (or tasks) in the pool, GPUs and CPUs each, rows per call.
RAY_KEYS = ("concurrency", "num_gpus", "num_cpus", "batch_size")


class RecipeError(UsageError):
    """The recipe cannot run as written; the message names where."""


@dataclass
class StageSpec:
    name: str
    args: dict[str, Any]
    where: str  # "default.yaml line 7" or "--set image_check.min_side"


@dataclass
class Recipe:
    name: str
    description: str
    stages: list[StageSpec]
    report: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    # stage name -> Ray placement (RAY_KEYS); changes where stages run, never what they write
    ray: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A stage that fails on this many records in a row, before any succeeds, with the same
    # error, stops the run (a wrong model or setting, not bad records). 0: never stop.
    stop_after_failures: int = DEFAULT_STOP_AFTER_FAILURES
    # "STAGE.ARG" of every argument --set changed (the report marks them in the recipe it shows)
    overridden: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "stages": [{s.name: s.args} for s in self.stages],
            "report": self.report,
            "source": self.source,
            "ray": self.ray,
            "stop_after_failures": self.stop_after_failures,
            "overridden": self.overridden,
        }

    def build(self) -> list[Stage]:
        stages = [STAGES[s.name](**s.args) for s in self.stages]
        # image_check hashes crop windows only for a dedup stage that compares them (near_crops)
        windows = any(getattr(stage, "near_crops", False) for stage in stages)
        for stage in stages:
            stage.stop_after_failures = self.stop_after_failures
            if getattr(stage, "crop_windows", False) is None:
                stage.crop_windows = windows
        return stages


def shipped_recipes() -> list[str]:
    folder = resources.files("recaption.recipes")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_text(name_or_path: str) -> tuple[str, str]:
    shipped = resources.files("recaption.recipes") / f"{name_or_path}.yaml"
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")) and shipped.is_file():
        return shipped.read_text(encoding="utf-8"), f"{name_or_path}.yaml"
    path = Path(name_or_path)
    if not path.is_file():
        raise RecipeError(f"no recipe {name_or_path!r}: not a shipped recipe ({', '.join(shipped_recipes())}) nor a file")
    return path.read_text(encoding="utf-8"), str(path)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return not args or all(any(_type_ok(v, a) for a in args) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_stage_args(name: str, args: dict[str, Any], where: str) -> None:
    cls = STAGES[name]
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    hints = typing.get_type_hints(cls.__init__)
    for key, value in args.items():
        if key not in params:
            raise RecipeError(f"{where}: stage {name!r} has no argument {key!r}{_suggest(key, list(params))}; "
                              f"its arguments are {', '.join(params) or 'none'}")
        if not _type_ok(value, hints.get(key, Any)):
            raise RecipeError(f"{where}: {name}.{key} must be {_hint_name(hints[key])}, not {value!r}")


def _parse_overrides(overrides: list[str]) -> list[tuple[str, str, Any, str]]:
    parsed = []
    for item in overrides:
        target, eq, raw = item.partition("=")
        stage, dot, arg = target.partition(".")
        if not eq or not dot or not stage or not arg:
            raise RecipeError(f"--set {item!r}: expected STAGE.ARG=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
        parsed.append((stage.strip(), arg.strip(), value, f"--set {target}"))
    return parsed


def load_recipe(name_or_path: str = "default", overrides: list[str] | None = None) -> Recipe:
    """A recipe by shipped name or YAML path, with ``--set`` overrides, checked before any work:
    every error names the file and line (or the --set) and what to do."""
    text, source = _read_text(name_or_path)
    data, nodes, at = _parse_yaml(text, source)
    specs = _stage_specs(data["stages"], nodes["stages"].value, at)
    ray = _ray_section(data.get("ray"), nodes.get("ray"), specs, at)
    _apply_overrides(overrides or [], specs, ray)
    report = data.get("report") or {}
    if not isinstance(report, dict):
        raise RecipeError(f"{at(nodes['report'])}: 'report' must be a mapping")
    for key, value in report.items():
        if key not in REPORT_KEYS or not isinstance(value, REPORT_KEYS[key]):
            raise RecipeError(f"{at(nodes['report'])}: report.{key} is unknown or not {REPORT_KEYS.get(key, int).__name__}")
    recipe = Recipe(str(data.get("name") or Path(source).stem), str(data.get("description") or ""), specs, report, source, ray,
                    overridden=sorted({f"{stage}.{arg}" for stage, arg, _, _ in _parse_overrides(overrides or []) if stage != "ray"}))
    validate_build(recipe)
    return recipe


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[str, yaml.Node], Any]:
    """The recipe's data, its top-level YAML nodes (for line numbers), and ``at(node)``."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict) or root is None:
        raise RecipeError(f"{source}: a recipe is a mapping with a 'stages' list")

    def at(node: yaml.Node) -> str:
        return f"{source} line {node.start_mark.line + 1}"

    for key, _ in root.value:
        if key.value not in TOP_LEVEL_KEYS:
            raise RecipeError(f"{at(key)}: unknown key {key.value!r}{_suggest(key.value, list(TOP_LEVEL_KEYS))}")
    nodes = {k.value: v for k, v in root.value}
    if not isinstance(nodes.get("stages"), yaml.SequenceNode) or not nodes["stages"].value:
        raise RecipeError(f"{source}: 'stages' must be a non-empty list")
    return data, nodes, at


def _stage_specs(items: list[Any], item_nodes: list[yaml.Node], at: Any) -> list[StageSpec]:
    specs: list[StageSpec] = []
    for item, item_node in zip(items, item_nodes):
        where = at(item_node)
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            raise RecipeError(f"{where}: each stage is '- NAME:' followed by its arguments")
        (name, args), = item.items()
        if name not in STAGES:
            raise RecipeError(f"{where}: unknown stage {name!r}{_suggest(str(name), list(STAGES))}; "
                              f"the stages are {', '.join(sorted(STAGES))}")
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise RecipeError(f"{where}: the arguments of {name!r} must be a mapping, not {args!r}")
        check_stage_args(name, args, where)
        specs.append(StageSpec(name, dict(args), where))
    return specs


def _ray_section(ray: Any, ray_node: yaml.Node | None, specs: list[StageSpec], at: Any) -> dict[str, dict[str, Any]]:
    ray = ray or {}
    if not isinstance(ray, dict):
        raise RecipeError(f"{at(ray_node)}: 'ray' must be a mapping of stage name to placement")
    ray = {str(name): placement for name, placement in ray.items()}
    for name, placement in ray.items():
        if placement is None:
            ray[name] = {}
        elif not isinstance(placement, dict):
            raise RecipeError(f"{at(ray_node)}: ray.{name} must be a mapping of {', '.join(RAY_KEYS)}")
        check_ray_placement(name, ray[name], specs, at(ray_node))
    return ray


def _apply_overrides(overrides: list[str], specs: list[StageSpec], ray: dict[str, dict[str, Any]]) -> None:
    """``--set STAGE.ARG=VALUE`` (every stage of that name) and ``--set ray.STAGE.KEY=VALUE``."""
    for stage, arg, value, where in _parse_overrides(overrides):
        if stage == "ray":
            target, dot, key = arg.partition(".")
            if not dot:
                raise RecipeError(f"{where}: expected ray.STAGE.KEY=VALUE")
            placement = {**ray.get(target, {}), key: value}
            check_ray_placement(target, placement, specs, where)
            ray[target] = placement
            continue
        matches = [s for s in specs if s.name == stage]
        if not matches:
            raise RecipeError(f"{where}: the recipe has no stage {stage!r}{_suggest(stage, [s.name for s in specs])}")
        for spec in matches:
            check_stage_args(stage, {arg: value}, where)
            spec.args[arg] = value
            spec.where = where if spec.where.startswith("--set") else f"{spec.where} ({where})"


def check_ray_placement(name: str, placement: dict[str, Any], specs: list[StageSpec], where: str) -> None:
    names = [s.name for s in specs]
    if name not in names:
        raise RecipeError(f"{where}: ray.{name}: the recipe has no stage {name!r}{_suggest(name, names)}")
    for key, value in placement.items():
        if key not in RAY_KEYS:
            raise RecipeError(f"{where}: ray.{name}.{key} is unknown{_suggest(key, list(RAY_KEYS))}; the keys are {', '.join(RAY_KEYS)}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        whole = isinstance(value, int) and not isinstance(value, bool)
        if key in ("num_gpus", "num_cpus") and not (number and value >= 0):
            raise RecipeError(f"{where}: ray.{name}.{key} must be a number >= 0, not {value!r}")
        if key == "batch_size" and not (whole and value >= 1):
            raise RecipeError(f"{where}: ray.{name}.batch_size must be a whole number >= 1, not {value!r}")
        if key == "concurrency":
            sizes = list(value) if isinstance(value, (list, tuple)) else [value]
            ok = len(sizes) in (1, 2) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes)
            if not ok or sizes != sorted(sizes):
                raise RecipeError(f"{where}: ray.{name}.concurrency must be N or [MIN, MAX] (whole numbers >= 1), not {value!r}")


def validate_build(recipe: Recipe) -> None:
    """Build every stage once so that bad values and missing needs fail before any work, and
    refuse a stage placed before the stage that makes what it reads."""
    built = []
    for spec in recipe.stages:
        try:
            built.append(STAGES[spec.name](**spec.args))
        except StageError as exc:
            raise RecipeError(f"{spec.where}: {exc}") from exc
    known = {fact for cls in STAGES.values() for fact in cls.provides} | set(INPUT_FACTS)
    for spec, stage in zip(recipe.stages, built):
        for group in type(stage).requires:
            if not set(group) & known:
                what = " or ".join(sorted(group))
                raise RecipeError(f"{spec.where}: {spec.name} reads {what}, which no stage makes and no input holds (a wrong 'requires' in the stage {type(stage).__name__})")
    made: set[str] = set()
    for i, (spec, stage) in enumerate(zip(recipe.stages, built)):
        for group in stage.facts_needed():
            if group & made:
                continue
            # Made by no stage before it: the input may hold it (a run's output read again),
            # unless a stage after it makes it, which is the recipe's order gone wrong.
            later = next((s for s in built[i + 1 :] if group & s.facts_made()), None)
            if later is not None:
                what = " or ".join(sorted(group))
                raise RecipeError(f"{spec.where}: {spec.name} reads {what}, which {later.name} makes later in the recipe: put {spec.name} after {later.name}")
        made |= stage.facts_made()


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Rebuild a recipe saved with a run (already validated when it was saved)."""
    stages = [StageSpec(name, dict(args or {}), f"{d.get('source', 'saved run')}") for s in d["stages"] for name, args in s.items()]
    return Recipe(
        d["name"], d.get("description", ""), stages, d.get("report", {}), d.get("source", ""), d.get("ray") or {},
        d.get("stop_after_failures", DEFAULT_STOP_AFTER_FAILURES), list(d.get("overridden") or []),
    )
