"""Adaptive average pooling that follows the runtime input size in an exported graph.

``nn.AdaptiveAvgPool2d`` (UperNet's pyramid pooling) is decomposed by the exporter with bin
edges computed at the tracing size, so a dynamic-size graph reads out of range at other sizes.
Here the bin edges are computed from the runtime size with the same rule as PyTorch (bin ``i`` of
``o`` over ``n`` inputs spans ``floor(i * n / o)`` to ``ceil((i + 1) * n / o)``) and each bin is
averaged through a cumulative sum. In eager mode the module calls PyTorch's own operator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pool_axis(x: torch.Tensor, out: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    i = torch.arange(out, device=x.device)
    start = torch.div(i * n, out, rounding_mode="floor")
    end = torch.div((i + 1) * n + out - 1, out, rounding_mode="floor")
    sums = F.pad(x.cumsum(dim), [0, 0] * (x.ndim - 1 - dim) + [1, 0])  # prefix sums with a leading 0
    total = sums.index_select(dim, end) - sums.index_select(dim, start)
    shape = [1] * x.ndim
    shape[dim] = out
    return total / (end - start).to(x.dtype).view(shape)


class ExportableAdaptiveAvgPool2d(nn.Module):
    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            return F.adaptive_avg_pool2d(x, self.output_size)
        return _pool_axis(_pool_axis(x, self.output_size[0], 2), self.output_size[1], 3)


def make_adaptive_pooling_exportable(module: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` under ``module`` in place; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, ExportableAdaptiveAvgPool2d(child.output_size))
            count += 1
        else:
            count += make_adaptive_pooling_exportable(child)
    return count
