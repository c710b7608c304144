"""A small synthetic instance-segmentation set for the demos and tests (``tools/make_toy_data.py``)."""

from .generate import CATEGORIES, CLASS_COLOURS, COLOUR_JITTER, generate, main

__all__ = ["CATEGORIES", "CLASS_COLOURS", "COLOUR_JITTER", "generate", "main"]
