"""Multi-head self-attention with q/v biases, 2D RoPE and optional windows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope

ATTENTION_IMPLS = ("sdpa", "xformers", "math")


class Attention(nn.Module):
    """EVA-02 attention.

    q, k and v are computed by one fused projection (one large matmul is
    faster than three); only q and v carry a bias, as released. Checkpoint
    conversion splits and joins the projections for the other layouts.

    ``inner_norm`` adds the LayerNorm of the EVA-02-CLIP towers on the
    attention output, before the output projection (``inner_attn_ln`` in
    the EVA-CLIP release, ``attn.norm`` in timm). The MIM-pre-trained EVA-02
    models have none.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        impl: str = "sdpa",
        inner_norm: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention implementation {impl!r}, expected one of {ATTENTION_IMPLS}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        # None rather than nn.Identity: the default model pays no extra call.
        self.inner_attn_ln = nn.LayerNorm(dim, eps=norm_eps) if inner_norm else None
        self.proj = nn.Linear(dim, dim)

    def _qkv_bias(self) -> torch.Tensor | None:
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.qkv.weight, self._qkv_bias())
        qkv = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qk, v = qkv[:2], qkv[2]
        if rope is not None:
            qk = apply_rope(qk, *rope)
        q, k = qk.unbind(0)
        x = self._attend(q, k, v).transpose(1, 2).reshape(b, n, c)
        if self.inner_attn_ln is not None:
            x = self.inner_attn_ln(x)
        return self.proj(x)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.impl == "sdpa":
            return F.scaled_dot_product_attention(q, k, v)
        if self.impl == "xformers":
            try:
                import xformers.ops as xops
            except ImportError as err:
                raise RuntimeError(
                    "attention impl 'xformers' requested but xformers is not installed"
                ) from err
            out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            return out.transpose(1, 2)
        attn = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        return attn.softmax(dim=-1) @ v


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * num_windows, window * window, C), zero-padding H and W up to the window."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    # always pad (by zero rows when none are needed): no branch on the size, for exported graphs
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding: returns (B, H, W, C)."""
    hp, wp = padded
    c = windows.shape[-1]
    x = windows.view(-1, hp // window, wp // window, window, window, c).transpose(2, 3)
    x = x.reshape(-1, hp, wp, c)
    return x[:, : size[0], : size[1]]
