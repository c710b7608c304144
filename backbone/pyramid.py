"""Simple feature pyramid: strides 4, 8, 16, 32 from stride-16 ViT maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from timm.layers import LayerNorm2d
from torch import nn


def _norm(kind: str | Callable[[int], nn.Module], channels: int) -> nn.Module:
    if callable(kind):  # e.g. a framework's norm builder (mmcv SyncBN)
        return kind(channels)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return LayerNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r} (expected 'bn' or 'ln')")


class SimpleFeaturePyramid(nn.Module):
    """Rescale stride-16 maps by ``scale_factors`` (4, 2, 1, 0.5 by default).

    x4: two 2x2 transposed convs with norm + GELU between, x2: one transposed
    conv, x1: identity, x0.5 / x0.25: 2x2 / 4x4 max-pool, as in ViTDet and the
    released EVA-02 segmentation backbone (whose ``fpn1..4`` are these stages, with
    the same parameter names). ``norm`` is "bn", "ln" or a callable building a norm
    for a channel count. ``halve_channels`` halves the width at each upsampling
    (ViTDet); otherwise every output keeps ``dim`` channels (EVA-02 segmentation).
    ``forward`` takes one map for all scales, or one map per scale.
    """

    def __init__(
        self,
        dim: int,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        norm: str | Callable[[int], nn.Module] = "bn",
        halve_channels: bool = False,
    ) -> None:
        super().__init__()
        self.scale_factors = tuple(scale_factors)
        self.out_channels: list[int] = []
        stages = []
        for scale in self.scale_factors:
            half = dim // 2 if halve_channels else dim
            quarter = dim // 4 if halve_channels else dim
            if scale == 4.0:
                stage = nn.Sequential(
                    nn.ConvTranspose2d(dim, half, 2, stride=2),
                    _norm(norm, half),
                    nn.GELU(),
                    nn.ConvTranspose2d(half, quarter, 2, stride=2),
                )
                out = quarter
            elif scale == 2.0:
                stage, out = nn.Sequential(nn.ConvTranspose2d(dim, half, 2, stride=2)), half
            elif scale == 1.0:
                stage, out = nn.Identity(), dim
            elif scale in (0.5, 0.25):
                kernel = int(1 / scale)
                stage, out = nn.MaxPool2d(kernel, stride=kernel), dim
            else:
                raise ValueError(f"unsupported scale factor {scale} (use 4, 2, 1, 0.5 or 0.25)")
            stages.append(stage)
            self.out_channels.append(out)
        self.stages = nn.ModuleList(stages)

    def forward(self, feats: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(feats, torch.Tensor):
            feats = [feats] * len(self.stages)
        if len(feats) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} feature maps, got {len(feats)}")
        return [stage(f) for stage, f in zip(self.stages, feats)]
