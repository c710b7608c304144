"""Simple feature pyramid: strides 4, 8, 16, 32 from stride-16 ViT maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .block import LayerNorm2d


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        return LayerNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r} (expected 'bn' or 'ln')")


class SimpleFeaturePyramid(nn.Module):
    """Rescale stride-16 maps by ``scale_factors`` (4, 2, 1, 0.5 by default).

    x4: two 2x2 transposed convs with norm + GELU between, x2: one transposed
    conv, x1: identity, x0.5: 2x2 max-pool, as in ViTDet and the released
    EVA-02 segmentation backbone. ``halve_channels`` halves the width at each
    upsampling (ViTDet); otherwise every output keeps ``dim`` channels (EVA-02
    segmentation). ``forward`` takes one map for all scales, or one map per scale.
    """

    def __init__(
        self,
        dim: int,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        norm: str = "bn",
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
                stage, out = nn.ConvTranspose2d(dim, half, 2, stride=2), half
            elif scale == 1.0:
                stage, out = nn.Identity(), dim
            elif scale == 0.5:
                stage, out = nn.MaxPool2d(2, stride=2), dim
            else:
                raise ValueError(f"unsupported scale factor {scale} (use 4, 2, 1 or 0.5)")
            stages.append(stage)
            self.out_channels.append(out)
        self.stages = nn.ModuleList(stages)

    def forward(self, feats: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if isinstance(feats, torch.Tensor):
            feats = [feats] * len(self.stages)
        if len(feats) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} feature maps, got {len(feats)}")
        return [stage(f) for stage, f in zip(self.stages, feats)]
