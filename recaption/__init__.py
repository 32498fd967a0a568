"""recaption: turn raw image-text pairs into model-ready training data."""

__version__ = "0.1.0"
