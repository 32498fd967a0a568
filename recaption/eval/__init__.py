"""Evaluation: caption metrics, one module per family."""
