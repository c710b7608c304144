"""Feature-distillation loss of EVA-02 masked image modeling."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def neg_cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative cosine similarity over rows of ``(M, D)`` predictions and targets.

    Computed in float32 whatever the autocast dtype: the cosine of bf16/fp16
    vectors of width 1024+ loses most of its precision in the norm.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape"
        )
    if prediction.ndim != 2 or prediction.shape[0] == 0:
        raise ValueError(
            f"expected a non-empty (M, D) set of masked-token features, got {tuple(prediction.shape)}"
        )
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        cos = F.cosine_similarity(prediction.float(), target.float(), dim=-1)
    return -cos.mean()
