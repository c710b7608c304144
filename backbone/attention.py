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
        return self.project(self.attend_heads(x, rope).transpose(1, 2).reshape(b, n, c))

    def attend_heads(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Attention of the tokens ``x`` (B, N, C), per head: (B, heads, N, head_dim), before
        :meth:`project`. ``rope`` is ``(cos, signed sin)`` (:func:`backbone.rope.signed_sin`)."""
        b, n, _ = x.shape
        qkv = F.linear(x, self.qkv.weight, self._qkv_bias())
        qkv = qkv.view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        qk, v = qkv[:2], qkv[2]
        if rope is not None:
            qk = apply_rope(qk, *rope)
        q, k = qk.unbind(0)
        return self._attend(q, k, v)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Output projection of the merged heads (B, N, C), after the inner norm if any."""
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
    # Traced or compiled: always pad (by zero rows when none are needed), so that exported graphs
    # have no branch on the size (inductor fuses the pad into the copy below). Eager: a pad by
    # nothing would only copy the tensor once more.
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (hp, wp)


def window_unpartition_heads(
    heads: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Per-head attention of windows (B * num_windows, heads, window * window, head_dim) -> tokens
    (B, H * W, heads * head_dim), dropping the padding.

    Merging the heads and undoing the windows is one permutation, hence one copy (two with
    padding) instead of one for the heads and one or two for the windows.
    """
    hp, wp = padded
    nh, nw = hp // window, wp // window
    _, num_heads, _, head_dim = heads.shape
    x = heads.view(-1, nh, nw, num_heads, window, window, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
    x = x.reshape(-1, hp, wp, num_heads * head_dim)[:, : size[0], : size[1]]
    return x.reshape(x.shape[0], size[0] * size[1], num_heads * head_dim)
