"""Resizing of the absolute position embedding and of the patch kernel.

Defaults follow the release: plain bicubic interpolation with
``align_corners=False`` and no antialiasing (that is how its p14to16
checkpoints were made). ``antialias=True`` or the pseudo-inverse kernel
resize are available as options.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def split_prefix(pos_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Split ``(1, [1 +] g*g, C)`` into (prefix, grid tokens, (g, g)); the cls slot is detected."""
    n = pos_embed.shape[1]
    for prefix in (0, 1):
        side = math.isqrt(n - prefix)
        if side * side == n - prefix and side > 0:
            return pos_embed[:, :prefix], pos_embed[:, prefix:], (side, side)
    raise ValueError(f"position embedding with {n} tokens is neither a square grid nor 1 + a square grid")


def resize_pos_grid(
    grid_tokens: torch.Tensor,
    src: tuple[int, int],
    dst: tuple[int, int],
    antialias: bool = False,
) -> torch.Tensor:
    """Bicubically resize ``(1, src_h * src_w, C)`` grid tokens to ``(1, dst_h * dst_w, C)``."""
    if tuple(src) == tuple(dst):
        return grid_tokens
    return interpolate_pos_grid(grid_tokens, src, dst, antialias)


def interpolate_pos_grid(
    grid_tokens: torch.Tensor,
    src: tuple[int, int],
    dst: tuple[int, int],
    antialias: bool = False,
) -> torch.Tensor:
    """:func:`resize_pos_grid` without the same-size shortcut.

    Branch-free, so that an exported graph keeps ``dst`` symbolic; at the same size bicubic
    interpolation weighs each source token by exactly 1 and its neighbours by 0, which leaves
    the tokens bit for bit unchanged.
    """
    dtype = grid_tokens.dtype
    c = grid_tokens.shape[-1]
    grid = grid_tokens.float().reshape(1, src[0], src[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False, antialias=antialias)
    return grid.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], c).to(dtype)


def resize_patch_kernel(weight: torch.Tensor, size: tuple[int, int], method: str = "bicubic") -> torch.Tensor:
    """Resize a patch-embedding kernel ``(C_out, C_in, kh, kw)`` to ``size``.

    ``bicubic``: plain interpolation, as the released p14to16 checkpoints.
    ``pinv``: FlexiViT's pseudo-inverse resize, which preserves the patch
    embedding of resized patches (through timm's implementation).
    """
    if tuple(weight.shape[-2:]) == tuple(size):
        return weight
    if method == "bicubic":
        out = F.interpolate(weight.float(), size=size, mode="bicubic", align_corners=False)
        return out.to(weight.dtype)
    if method == "pinv":
        from timm.layers import resample_patch_embed

        return resample_patch_embed(weight, list(size))
    raise ValueError(f"unknown patch kernel resize method {method!r} (expected 'bicubic' or 'pinv')")
