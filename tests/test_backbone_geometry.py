"""Geometry: RoPE tables, windows, non-square inputs, feature maps and the pyramid."""

import pytest
import torch
from timm.layers import build_rotary_pos_embed

from backbone import SimpleFeaturePyramid, build_backbone
from backbone.rope import rope_table


def test_rope_table_by_hand():
    # head_dim 4 -> one band of frequency 1 per axis: angles are (row, row, col, col) * spacing.
    cos, sin = rope_table((2, 3), (0.5, 2.0), head_dim=4)
    rows = torch.tensor([0.0, 0.5]).repeat_interleave(3)
    cols = torch.tensor([0.0, 2.0, 4.0]).repeat(2)
    angles = torch.stack([rows, rows, cols, cols], dim=1)
    torch.testing.assert_close(cos, angles.cos())
    torch.testing.assert_close(sin, angles.sin())


def test_rope_table_with_cls_slot_is_identity_rotation():
    cos, sin = rope_table((2, 2), (1.0, 1.0), head_dim=8, num_prefix_tokens=1)
    assert cos.shape == (5, 8)
    assert torch.all(cos[0] == 1) and torch.all(sin[0] == 0)


@pytest.mark.parametrize("grid", [(16, 16), (24, 18), (7, 40)])
def test_rope_table_equals_timm_eva_scheme(grid):
    sin_ref, cos_ref = build_rotary_pos_embed(list(grid), dim=64, in_pixels=False, ref_feat_shape=[16, 16])
    cos, sin = rope_table(grid, (16 / grid[0], 16 / grid[1]), head_dim=64)
    torch.testing.assert_close(cos, cos_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sin, sin_ref, atol=1e-5, rtol=1e-5)


def test_one_window_covering_the_grid_equals_global_attention():
    kwargs = dict(use_cls_token=False, img_size=224)
    global_model = build_backbone("eva02_tiny", **kwargs).eval()
    window_model = build_backbone(
        "eva02_tiny", window_size=16, window_block_indexes=range(12), **kwargs
    ).eval()
    window_model.load_state_dict(global_model.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(window_model(x)["last_feat"], global_model(x)["last_feat"])


def test_fixed_rule_small_input_sees_the_same_positions_as_a_large_one():
    """Windowed model: the top-left window of a small input must match the large input's."""
    model = build_backbone(
        "eva02_tiny", use_cls_token=False, depth=3, window_size=8, window_block_indexes=(0, 1, 2)
    ).eval()
    big = torch.randn(1, 3, 224, 224)
    small = big[:, :, :112, :112]
    with torch.no_grad():
        out_big, out_small = model(big)["last_feat"], model(small)["last_feat"]
    assert out_small.shape == (1, 192, 8, 8)
    torch.testing.assert_close(out_small, out_big[:, :, :8, :8], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [(230, 150), (97, 301), (64, 64)])
def test_non_square_and_indivisible_sizes(size):
    model = build_backbone(
        "eva02_tiny",
        depth=4,
        img_size=256,
        patch_size=16,
        pretrain_img_size=224,
        use_cls_token=False,
        window_size=7,
        window_block_indexes=(0, 2),
        residual_block_indexes=(1,),
    ).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feat = model(x)["last_feat"]
    h, w = -(-size[0] // 16), -(-size[1] // 16)
    assert feat.shape == (2, 192, h, w)
    assert torch.isfinite(feat).all()
    # zero padding to the patch multiple: explicit padding gives the same answer
    padded = torch.nn.functional.pad(x, (0, w * 16 - size[1], 0, h * 16 - size[0]))
    with torch.no_grad():
        torch.testing.assert_close(model(padded)["last_feat"], feat)


def test_forward_blocks_returns_intermediate_maps():
    model = build_backbone("eva02_tiny", depth=6).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        maps = model.forward_blocks(x, (1, 3, 5))
        tokens = model.forward_tokens(x)
    assert [m.shape for m in maps] == [(1, 192, 16, 16)] * 3
    last = tokens[:, 1:].transpose(1, 2).reshape(1, 192, 16, 16)
    torch.testing.assert_close(maps[-1], last)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_blocks(x, (6,))


def test_drop_path_and_act_checkpoint_training_gradients():
    kwargs = dict(depth=2, use_cls_token=False, drop_path_rate=0.0)
    plain = build_backbone("eva02_tiny", **kwargs).train()
    ckpt = build_backbone("eva02_tiny", use_act_checkpoint=True, **kwargs).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 112, 112)
    plain(x)["last_feat"].square().mean().backward()
    ckpt(x)["last_feat"].square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    stochastic = build_backbone("eva02_tiny", depth=2, drop_path_rate=0.5).train()
    outs = {tuple(stochastic.forward_tokens(x).flatten()[:4].tolist()) for _ in range(6)}
    assert len(outs) > 1  # branches are dropped at random while training


def test_simple_feature_pyramid_strides_and_channels():
    feat = torch.randn(2, 64, 8, 12)
    seg_style = SimpleFeaturePyramid(64, norm="bn")
    outs = seg_style(feat)
    assert [tuple(o.shape) for o in outs] == [(2, 64, 32, 48), (2, 64, 16, 24), (2, 64, 8, 12), (2, 64, 4, 6)]
    assert torch.equal(outs[2], feat)
    torch.testing.assert_close(outs[3], torch.nn.functional.max_pool2d(feat, 2))
    det_style = SimpleFeaturePyramid(64, norm="ln", halve_channels=True)
    assert det_style.out_channels == [16, 32, 64, 64]
    outs = det_style([feat] * 4)
    assert [o.shape[1] for o in outs] == [16, 32, 64, 64]


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="use_cls_token=False"):
        build_backbone("eva02_tiny", window_size=8, window_block_indexes=(0,))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("eva02_huge")
    with pytest.raises(ValueError, match="out of range"):
        build_backbone("eva02_tiny", use_cls_token=False, window_size=8, window_block_indexes=(12,))
