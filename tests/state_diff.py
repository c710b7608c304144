"""Largest absolute difference between two nested checkpoint structures (the resume tests' yardstick)."""

from __future__ import annotations

import torch


def max_diff(a, b, *, equal_leaves: bool = False) -> float:
    """Max |a - b| over the tensors of two nested dicts / lists; ``equal_leaves`` also requires every
    non-tensor leaf (iteration counters, hyper-parameters) to be equal."""
    if isinstance(a, torch.Tensor):
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max((max_diff(a[k], b[k], equal_leaves=equal_leaves) for k in a), default=0.0)
    if isinstance(a, (list, tuple)):
        return max((max_diff(x, y, equal_leaves=equal_leaves) for x, y in zip(a, b)), default=0.0)
    if equal_leaves:
        assert a == b
    return 0.0
