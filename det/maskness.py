"""Mask-score ("maskness") re-scoring of instance predictions."""

from __future__ import annotations

import torch
from detectron2.structures import Instances


def maskness(mask_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean foreground probability of each mask over its pixels above ``threshold``.

    ``mask_probs``: (N, 1, M, M) or (N, M, M) sigmoid probabilities. A mask with no pixel
    above the threshold gets 0.
    """
    probs = mask_probs.flatten(1)
    fg = probs > threshold
    count = fg.sum(1)
    total = (probs * fg).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def rescore_with_maskness(instances: Instances, threshold: float) -> Instances:
    """Multiply ``scores`` by the maskness of ``pred_masks`` and re-sort, best first."""
    if len(instances) == 0 or not instances.has("pred_masks"):
        return instances  # nothing to score (e.g. a box-only pass of test-time augmentation)
    scores = instances.scores * maskness(instances.pred_masks, threshold).to(instances.scores)
    instances.scores = scores
    return instances[torch.argsort(scores, descending=True)]
