"""SwiGLU feed-forward network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """``w3(ffn_ln(silu(x W_gate) * (x W_value)))``.

    Gate and value projections are packed in ``w12`` (gate first), as in the
    released tiny/small models; the base/large layout with separate ``w1``
    and ``w2`` is joined on load. ``sub_ln`` adds the released sub-LN
    (``ffn_ln``) on the hidden features.
    """

    def __init__(self, dim: int, hidden_dim: int, sub_ln: bool, eps: float = 1e-6) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.ffn_ln = nn.LayerNorm(hidden_dim, eps=eps) if sub_ln else nn.Identity()
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        hidden = F.silu(gate)
        if torch.is_grad_enabled() and (gate.requires_grad or value.requires_grad):
            hidden = hidden * value  # in place, autograd would keep a copy of the SiLU output
        else:
            hidden.mul_(value)  # no new hidden-size buffer; bit-identical
        return self.w3(self.ffn_ln(hidden))
