"""The fused forward paths (heads merged with the window unpartition, projection after it, residuals
and the SwiGLU gate written in place, signed RoPE tables) against references built from timm's
``EvaBlock`` and detectron2's window functions, forward and backward, padded and unpadded windows."""

from functools import partial

import pytest
import torch
from detectron2.modeling.backbone.utils import window_partition as d2_partition
from detectron2.modeling.backbone.utils import window_unpartition as d2_unpartition
from timm.layers import build_rotary_pos_embed
from timm.models.eva import EvaBlock
from torch import nn

from backbone import build_backbone, from_internal
from backbone.attention import window_unpartition_heads


def _timm_block(model, index: int) -> EvaBlock:
    """timm's block with the weights of our block ``index`` (converted by our timm export)."""
    blk = model.blocks[index]
    prefix = f"blocks.{index}."
    timm_sd = from_internal(model.state_dict(), "timm")
    sd = {k[len(prefix) :]: v for k, v in timm_sd.items() if k.startswith(prefix)}
    ref = EvaBlock(
        model.embed_dim,
        model.num_heads,
        qkv_fused="attn.qkv.weight" in sd,  # timm's base / large use separate q, k, v projections
        mlp_ratio=blk.mlp.hidden_dim / model.embed_dim,
        swiglu_mlp=True,
        scale_mlp=isinstance(blk.mlp.ffn_ln, nn.LayerNorm),
        num_prefix_tokens=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    ref.load_state_dict(sd)
    return ref


def _reference_window_block(ref: EvaBlock, x: torch.Tensor, grid, window: int) -> torch.Tensor:
    """ViTDet's window attention (detectron2's partition / unpartition) around timm's EVA block parts."""
    b, n, c = x.shape
    sin, cos = build_rotary_pos_embed(
        [window, window], dim=c // ref.attn.num_heads, in_pixels=False, ref_feat_shape=[16, 16]
    )
    windows, pad_hw = d2_partition(ref.norm1(x).view(b, *grid, c), window)
    y = ref.attn(windows.view(-1, window * window, c), rope=torch.cat((sin, cos), -1))
    y = d2_unpartition(y.view(-1, window, window, c), window, pad_hw, grid).reshape(b, n, c)
    x = x + y
    return x + ref.mlp(ref.norm2(x))


@pytest.mark.parametrize(
    "preset,side,window", [("eva02_base", 128, 4), ("eva02_tiny", 112, 3)]
)  # base: sub-LN SwiGLU, 8 x 8 grid in 4 x 4 windows; tiny: packed SwiGLU, 7 x 7 grid padded to 9 x 9
def test_window_block_equals_timm_block_in_detectron2_windows(preset, side, window):
    torch.manual_seed(0)
    model = build_backbone(
        preset, depth=1, img_size=side, patch_size=16, use_cls_token=False, window_size=window,
        window_block_indexes=(0,),
    )  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref = _timm_block(model, 0)
    grid = (side // 16, side // 16)
    rope = model._rope_tables(grid, torch.device("cpu"))[window]
    x = torch.randn(2, grid[0] * grid[1], model.embed_dim)

    with torch.no_grad():  # the in-place inference paths
        x_before = x.clone()
        got = model.blocks[0](x, grid, rope)
        expected = _reference_window_block(ref, x, grid, window)
    assert torch.equal(x, x_before)  # the residual is written into the branch output, never into x
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)

    xs = [x.clone().requires_grad_() for _ in range(2)]
    weights = torch.randn_like(x)
    (model.blocks[0](xs[0], grid, rope) * weights).sum().backward()
    (_reference_window_block(ref, xs[1], grid, window) * weights).sum().backward()
    # float rounding of sums over a different token order: bounded relative to the gradient's scale
    scale = xs[1].grad.abs().max().item()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, atol=1e-5 * scale, rtol=1e-5)
    assert ((xs[0].grad - xs[1].grad).norm() / xs[1].grad.norm()).item() < 1e-5
    timm_grads = dict(ref.named_parameters())
    ours = from_internal({f"blocks.0.{k}": p.grad for k, p in model.blocks[0].named_parameters()}, "timm")
    for key, grad in ours.items():
        expected_grad = timm_grads[key.removeprefix("blocks.0.")].grad
        assert ((grad - expected_grad).norm() / expected_grad.norm()).item() < 1e-5, key


def test_heads_and_windows_are_undone_in_one_permutation():
    b, heads, head_dim, window, grid = 2, 3, 4, 3, (5, 7)  # padded to 6 x 9: 2 x 3 windows per image
    per_head = torch.randn(b * 6, heads, window * window, head_dim)
    merged = per_head.transpose(1, 2).reshape(b * 6, window, window, heads * head_dim)
    expected = d2_unpartition(merged, window, (6, 9), grid).reshape(b, -1, heads * head_dim)
    assert torch.equal(window_unpartition_heads(per_head, window, (6, 9), grid), expected)
