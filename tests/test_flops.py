"""The FLOP counter counts attention on CPU, against hand counts."""

import torch
import torch.nn.functional as F

from backbone.attention import Attention
from bench.flops import count_flops


def test_one_sdpa_call_matches_the_hand_count():
    # 12 heads x 1024 tokens x 64: q @ k^T and attn @ v, 2 FLOPs per multiply-add.
    q, k, v = (torch.randn(1, 12, 1024, 64) for _ in range(3))
    with torch.no_grad():
        flops = count_flops(F.scaled_dot_product_attention, q, k, v)
    assert flops == 2 * 2 * 12 * 1024 * 1024 * 64 == 3_221_225_472


def test_attention_forward_and_backward_match_the_hand_count():
    b, n, dim, heads = 2, 49, 96, 3
    attn = Attention(dim, heads)
    x = torch.randn(b, n, dim, requires_grad=True)
    linear = 2 * b * n * dim * (3 * dim + dim)  # fused qkv projection + output projection
    sdpa = 2 * 2 * b * heads * n * n * (dim // heads)
    with torch.no_grad():
        assert count_flops(attn, x) == linear + sdpa

    # Backward: each linear costs twice its forward (input and weight gradients); SDPA backward
    # recomputes q @ k^T and runs four more matmuls of the same size.
    total = count_flops(lambda t: attn(t).sum().backward(), x)
    assert total == 3 * linear + sdpa + 5 * sdpa // 2
