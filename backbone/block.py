"""Transformer block (global or windowed attention) and ViTDet's residual conv block."""

from __future__ import annotations

import torch
from timm.layers import DropPath, LayerNorm2d
from torch import nn

from .attention import Attention, window_partition, window_unpartition_heads
from .mlp import SwiGLU

Rope = tuple[torch.Tensor, torch.Tensor]


class Block(nn.Module):
    """Pre-norm block: attention (global, or inside ``window_size`` windows) then SwiGLU."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden_dim: int,
        sub_ln: bool,
        window_size: int = 0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        attn_impl: str = "sdpa",
        residual_conv: bool = False,
        inner_attn_norm: bool = False,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, impl=attn_impl, inner_norm=inner_attn_norm, norm_eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = SwiGLU(dim, mlp_hidden_dim, sub_ln=sub_ln, eps=norm_eps)
        self.residual = ResidualConvBlock(dim) if residual_conv else None

    def forward(self, x: torch.Tensor, grid: tuple[int, int], rope: Rope | None) -> torch.Tensor:
        """``x``: (B, [prefix +] H*W, C) tokens on a ``grid`` = (H, W) patch grid."""
        y = self.norm1(x)
        if self.window_size:
            b, _, c = y.shape
            windows, padded = window_partition(y.view(b, grid[0], grid[1], c), self.window_size)
            heads = self.attn.attend_heads(windows, rope)
            # the output projection is per token: applied after undoing the windows, it skips the padding
            y = self.attn.project(window_unpartition_heads(heads, self.window_size, padded, grid))
        else:
            y = self.attn(y, rope)
        x = _add_residual(x, self.drop_path(y))
        x = _add_residual(x, self.drop_path(self.mlp(self.norm2(x))))
        if self.residual is not None:
            b, _, c = x.shape
            fmap = x.transpose(1, 2).reshape(b, c, grid[0], grid[1])
            x = self.residual(fmap).flatten(2).transpose(1, 2)
        return x


def _add_residual(x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``x + branch``, written into ``branch`` when it has x's dtype and shape: the branch output is
    a fresh tensor that nothing else holds (and ``add_`` keeps nothing for its gradient), so the
    sum needs no new buffer. The caller's ``x`` is never modified. Bit-identical to ``x + branch``."""
    if branch.dtype == x.dtype and branch.shape == x.shape:
        return branch.add_(x)
    return x + branch  # e.g. bf16 branch on an fp32 stream under autocast


class ResidualConvBlock(nn.Module):
    """ViTDet's bottleneck conv block (1x1, 3x3, 1x1 with LN), added after chosen blocks.

    The last norm starts at zero so that inserting the block leaves a
    pre-trained network's function unchanged.
    """

    def __init__(self, dim: int, bottleneck: int | None = None) -> None:
        super().__init__()
        mid = bottleneck or dim // 2
        self.conv1 = nn.Conv2d(dim, mid, 1, bias=False)
        self.norm1 = LayerNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.norm2 = LayerNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, dim, 1, bias=False)
        self.norm3 = LayerNorm2d(dim)
        self.act = nn.GELU()
        nn.init.zeros_(self.norm3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.act(self.norm2(self.conv2(y)))
        return x + self.norm3(self.conv3(y))
