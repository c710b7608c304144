"""2D rotary position embedding (RoPE) as used by EVA-02.

The head dimension is split in two halves: the first rotates with the row
position, the second with the column position. Within each half, channels
are rotated in interleaved pairs (0, 1), (2, 3), ... with one frequency per
pair, exactly as in the released models.

Positions are real numbers: the released models express every grid in units
of the pre-training grid (16 x 16 tokens for 224 px / patch 14), so a grid of
``n`` tokens spanning ``ref`` reference tokens has a spacing of ``ref / n``.
Tables are computed on the fly for whatever grid the input has; they are
never stored in a state dict.
"""

from __future__ import annotations

import torch


def rope_bands(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Inverse frequencies, one per rotated channel pair of one axis."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
    num_bands = head_dim // 4
    return 1.0 / theta ** (torch.arange(num_bands, dtype=torch.float32) / num_bands)


def rope_table(
    grid: tuple[int, int],
    spacing: tuple[float, float],
    head_dim: int,
    num_prefix_tokens: int = 0,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(cos, sin)`` of shape ``(prefix + h * w, head_dim)``.

    Prefix tokens (the cls token) get an identity rotation so that the whole
    sequence can be rotated in one call.
    """
    h, w = grid
    bands = rope_bands(head_dim, theta).to(device)
    rows = torch.arange(h, device=device, dtype=torch.float32) * spacing[0]
    cols = torch.arange(w, device=device, dtype=torch.float32) * spacing[1]
    row_angles = (rows[:, None] * bands).repeat_interleave(2, dim=-1)  # (h, head_dim / 2)
    col_angles = (cols[:, None] * bands).repeat_interleave(2, dim=-1)  # (w, head_dim / 2)
    angles = torch.cat(
        (row_angles[:, None, :].expand(h, w, -1), col_angles[None, :, :].expand(h, w, -1)), dim=-1
    ).reshape(h * w, head_dim)
    if num_prefix_tokens:
        angles = torch.cat((angles.new_zeros(num_prefix_tokens, head_dim), angles))
    return angles.cos(), angles.sin()


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with the first member of every channel pair negated, as :func:`apply_rope` takes it.

    Computed once per table (per forward pass), not in every block.
    """
    return sin * torch.tensor([-1.0, 1.0], dtype=sin.dtype, device=sin.device).repeat(sin.shape[-1] // 2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., N, head_dim) by the table (N, head_dim); ``sin_signed`` from :func:`signed_sin`.

    Computed as ``x * cos + swap(x) * sin_signed`` with ``swap`` exchanging the two members of each
    pair: two passes over ``x`` instead of the four that negating and stacking take, and the second
    term is accumulated into the first's buffer (``addcmul_`` needs neither buffer's old value for
    its gradient, so autograd keeps no copy).
    """
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    out = x * cos.to(x.dtype)
    return out.addcmul_(swapped, sin_signed.to(x.dtype))
