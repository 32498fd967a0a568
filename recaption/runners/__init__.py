"""Runners execute a recipe over a dataset: ``local`` (processes on one machine)."""
