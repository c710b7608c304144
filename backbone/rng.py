"""Capturing and restoring every RNG a training step draws from, for an exact resume."""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng() -> dict:
    """Python, NumPy and torch (CPU and CUDA) RNG states, as tensors and plain containers only."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict, parts: tuple[str, ...] = ("python", "numpy", "torch")) -> None:
    """Undo :func:`capture_rng` for the generators named in ``parts`` (``torch`` includes CUDA)."""
    if "python" in parts:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "numpy" in parts:
        npy = state["numpy"]
        keys = npy["keys"].numpy().astype(np.uint32)
        np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    if "torch" in parts:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
