"""Stages: one small class each on the contract in base.py. Importing this package registers them."""

from recaption.stages import caption, dedup, image, scoring, select, tags, text  # noqa: F401 - registers the stages
from recaption.stages.base import STAGES, Decision, Filter, GlobalStage, Needs, Stage, StageError

__all__ = ["STAGES", "Decision", "Filter", "GlobalStage", "Needs", "Stage", "StageError"]
