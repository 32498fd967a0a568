"""Stages: one small class each on the contract in base.py. Importing this package registers
them: every module in it is imported, so a new stage is a class in a file here (``@register``)."""

import importlib
import pkgutil

from recaption.stages.base import STAGES, Filter, GlobalStage, Needs, Stage, StageError

for _module in pkgutil.iter_modules(__path__):  # sorted by name: the registry's order is stable
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STAGES", "Filter", "GlobalStage", "Needs", "Stage", "StageError"]
