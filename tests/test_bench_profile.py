"""``tools/benchmark.py profile`` on the reduced geometry: every operator's self time lands in one kind,
the kinds add up to the whole, and the FLOPs behind the efficiency figure equal a hand count."""

import argparse

import pytest
import torch
import torch.nn.functional as F

from bench import profile


@pytest.fixture(scope="module")
def reduced():
    args = argparse.Namespace(reduced=True, compile=False, iters=1)
    return profile.run(args)


def test_kinds_cover_all_operator_time(reduced):
    kinds = reduced["kinds"]
    assert sum(row["share"] for row in kinds.values()) == pytest.approx(1.0, abs=1e-9)
    total_ms = sum(row["self_ms_per_pass"] for row in kinds.values())
    assert total_ms == pytest.approx(reduced["operator_ms_per_pass"])
    assert set(kinds) <= set(profile.KINDS)
    # the GEMMs, the fused attention, the RoPE and the window copies are all found and attributed
    for kind in ("matmul / linear", "attention (SDPA)", "RoPE (tables + application)",
                 "window partition / unpartition (copies, pad)", "LayerNorm"):  # fmt: skip
        assert kinds[kind]["share"] > 0, kind


def test_efficiency_uses_the_hand_counted_forward_flops(reduced):
    # eva02_tiny, 2 blocks on 4 x 4 tokens of 16 px; block 0 in four 2 x 2 windows, block 1 global
    dim, heads, head_dim, hidden, tokens, patch = 192, 3, 64, 512, 16, 16
    conv = 2 * tokens * dim * 3 * patch * patch
    linear = 2 * tokens * (dim * 3 * dim + dim * dim + dim * 2 * hidden + hidden * dim)
    sdpa = 4 * 4 * heads * 4**2 * head_dim + 4 * heads * tokens**2 * head_dim
    assert reduced["flops"] == conv + 2 * linear + sdpa == 33_275_904
    achieved = reduced["flops"] / reduced["forward_s"]
    assert reduced["efficiency"] == pytest.approx(achieved / (reduced["matmul_GFLOPs"] * 1e9))


def test_an_operator_goes_to_its_enclosing_backbone_function_first():
    class Event:
        def __init__(self, name, parent=None):
            self.name, self.cpu_parent = name, parent

    rope = Event("backbone/rope.py(63): apply_rope", Event("backbone/attention.py(60): attend_heads"))
    window = Event("backbone/attention.py(96): window_partition")
    assert profile.classify(Event("aten::addcmul_", rope)) == "RoPE (tables + application)"
    assert profile.classify(Event("aten::mul_", Event("backbone/mlp.py(26): forward"))).startswith("element")
    assert profile.classify(Event("aten::copy_", window)).startswith("window partition")
    assert profile.classify(Event("aten::copy_")).startswith("other layout")
    assert profile.classify(Event("aten::addmm")) == "matmul / linear"
    assert profile.classify(Event("aten::upsample_bicubic2d")) == "other"
    fused = Event("graph_1_cpp_fused__unsafe_view_addmm_cat_clone_constant_pad_nd_native_layer_norm_0")
    assert profile.classify(fused) == "compiled fused kernels"  # not a matmul for its name


def test_attention_kernels_benchmark_counts_the_two_products_by_hand():
    from bench import attention

    rows = attention.run(argparse.Namespace(reduced=True, iters=1))
    # 4 windows x 3 heads: q k^T and attn v, 16 x 16 x 64 multiply-adds each, 2 FLOPs per multiply-add
    assert [r["flops"] for r in rows] == [2 * 2 * 4 * 3 * 16 * 16 * 64, 2 * 2 * 3 * 64 * 64 * 64]
    q, k, v = (torch.randn(2, 3, 16, 64) for _ in range(3))
    torch.testing.assert_close(attention.plain_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    for r in rows:
        assert r["sdpa_share_of_peak"] == pytest.approx(
            r["flops"] / (r["sdpa_ms"] / 1e3) / (r["matmul_GFLOPs"] * 1e9)
        )
