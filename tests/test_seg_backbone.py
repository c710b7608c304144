"""EVA02 mmseg backbone: pyramid geometry, pretrained loading, layer decay groups, safe loading."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

import seg  # noqa: F401  (registers the modules)
from backbone import build_backbone, from_internal

init_default_scope("mmseg")


def _backbone(arch: str, out_indices, depth=None, **kw):
    cfg = dict(type="EVA02", arch=arch, img_size=64, out_indices=out_indices, norm_cfg=dict(type="BN"), **kw)
    if depth is not None:
        cfg["depth"] = depth
    return MODELS.build(cfg).eval()  # the constructor already ran the random init


# B as configured; L at its width and head count but 8 blocks (building 24 blocks of width 1024
# costs ~20 s of CPU init, and strides/channels do not depend on depth).
@pytest.mark.parametrize(
    "arch,out_indices,depth,dim",
    [("eva02_base", (3, 5, 7, 11), None, 768), ("eva02_large", (1, 3, 5, 7), 8, 1024)],
)
def test_four_scales_strides_and_channels(arch, out_indices, depth, dim):
    model = _backbone(arch, out_indices, depth)
    assert model.depth == max(out_indices) + 1 and model.num_heads == dim // 64
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model(x)
        blocks = model.forward_blocks(x, list(out_indices))
    # values, not only shapes: stride 16 is the block's map itself, stride 32 its 2x2 max-pool
    assert torch.equal(outs[2], blocks[2])
    assert torch.equal(outs[3], F.max_pool2d(blocks[3], 2, 2))
    assert [tuple(o.shape) for o in outs] == [
        (1, dim, 16, 24),
        (1, dim, 8, 12),
        (1, dim, 4, 6),
        (1, dim, 2, 3),
    ]
    # any input size: padded to the patch grid (ceil), max-pool floors the odd grid
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 70, 100))
    assert [tuple(o.shape[-2:]) for o in outs] == [(20, 28), (10, 14), (5, 7), (2, 3)]


def test_scales_come_from_the_configured_blocks():
    model = _backbone("eva02_tiny", (1, 2, 3, 5), depth=6)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
        blocks = model.forward_blocks(x, [1, 2, 3, 5])
        assert torch.equal(outs[2], blocks[2])  # stride 16: identity on block 3
        assert torch.equal(outs[3], F.max_pool2d(blocks[3], 2, 2))  # stride 32: max-pool of block 5
        assert torch.allclose(
            outs[1], model.fpn2(blocks[1]), atol=1e-6
        )  # stride 8: transposed conv of block 2
        assert torch.allclose(
            outs[0], model.fpn1(blocks[0]), atol=1e-6
        )  # stride 4: deconv-BN-GELU-deconv, block 1
    assert isinstance(model.fpn1[1], torch.nn.BatchNorm2d) and isinstance(model.fpn1[2], torch.nn.GELU)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="out_indices"):
        MODELS.build(
            dict(type="EVA02", arch="eva02_tiny", out_indices=(1, 2, 3, 12), norm_cfg=dict(type="BN"))
        )
    with pytest.raises(ValueError, match="unknown arch 'eva02_huge'"):
        MODELS.build(dict(type="EVA02", arch="eva02_huge"))


@pytest.mark.parametrize("how", ["pretrained", "init_cfg"])
def test_pretrained_release_layout_fills_every_backbone_weight(tmp_path, how):
    # A pre-training (MIM) checkpoint in the original EVA-02 layout: patch 14, 224 px, cls token.
    src = build_backbone("eva02_tiny", depth=4)
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.5)
    release = {f"module.{k}": v for k, v in from_internal(src.state_dict(), "eva02").items()}
    release["module.mask_token"] = torch.zeros(1, 1, 192)
    path = tmp_path / "eva02_tiny_pt.pt"
    torch.save({"module": release}, path)

    cfg = dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1], size=(64, 64)),
        backbone=dict(
            type="EVA02",
            arch="eva02_tiny",
            depth=4,
            img_size=64,
            out_indices=(0, 1, 2, 3),
            norm_cfg=dict(type="BN"),
            **(
                dict(pretrained=str(path))
                if how == "pretrained"
                else dict(init_cfg=dict(type="Pretrained", checkpoint=str(path)))  # mmseg's spelling
            ),
        ),
        decode_head=dict(
            type="UPerHead",
            in_channels=[192] * 4,
            in_index=[0, 1, 2, 3],
            channels=32,
            num_classes=3,
            norm_cfg=dict(type="BN"),
        ),
    )
    model = MODELS.build(cfg)
    before = model.backbone.blocks[0].attn.qkv.weight.clone()
    model.init_weights()  # what mmengine's runner calls after building
    got, want = model.backbone.state_dict(), src.state_dict()
    vit_keys = [k for k in got if not k.startswith("fpn")]
    assert set(vit_keys) == set(want)
    for key in vit_keys:
        if key in ("patch_embed.proj.weight", "pos_embed"):
            continue
        assert torch.equal(got[key], want[key]), key
    assert not torch.equal(before, got["blocks.0.attn.qkv.weight"])
    # patch kernel 14 -> 16 and position grid 16x16 (224/14) -> 4x4 (64/16), bicubic, cls slot kept
    kernel = F.interpolate(
        want["patch_embed.proj.weight"], size=(16, 16), mode="bicubic", align_corners=False
    )
    assert torch.allclose(got["patch_embed.proj.weight"], kernel, atol=1e-6)
    grid = want["pos_embed"][:, 1:].reshape(1, 16, 16, 192).permute(0, 3, 1, 2)
    grid = (
        F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1)
        .reshape(1, 16, 192)
    )
    assert torch.allclose(got["pos_embed"], torch.cat([want["pos_embed"][:, :1], grid], 1), atol=1e-6)


def test_unsupported_init_cfg_is_refused_by_name(tmp_path):
    base = dict(type="EVA02", arch="eva02_tiny", depth=2, out_indices=(0, 1, 1, 1), img_size=64,
                norm_cfg=dict(type="BN"))  # fmt: skip
    with pytest.raises(ValueError, match=r"init_cfg \{'type': 'Kaiming'\} is not supported"):
        MODELS.build(dict(base, init_cfg=dict(type="Kaiming")))
    with pytest.raises(ValueError, match="only 'checkpoint' .* 'map_location'"):
        MODELS.build(dict(base, init_cfg=dict(type="Pretrained", checkpoint="a.pth", prefix="backbone.")))
    with pytest.raises(ValueError, match="'a.pth' and init_cfg checkpoint 'b.pth' disagree"):
        MODELS.build(dict(base, pretrained="a.pth", init_cfg=dict(type="Pretrained", checkpoint="b.pth")))


def test_pretrained_of_wrong_size_is_refused(tmp_path):
    src = build_backbone("eva02_small", depth=2)
    path = tmp_path / "small.pt"
    torch.save(src.state_dict(), path)
    model = MODELS.build(
        dict(
            type="EVA02",
            arch="eva02_tiny",
            depth=2,
            out_indices=(0, 1, 1, 1),
            img_size=64,
            norm_cfg=dict(type="BN"),
            pretrained=str(path),
        )
    )
    with pytest.raises(ValueError, match="width 384, depth 2.*width 192"):
        model.init_weights()


def _released_layer_id(name: str, depth: int) -> int:
    # independent restatement of the released rule on full segmentor names
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.blocks"):
        return int(name.split(".")[2]) + 1
    return depth + 1


def test_layer_decay_groups_follow_the_released_rule():
    depth, rate, lr, wd = 4, 0.85, 6e-5, 0.05
    model = MODELS.build(
        dict(
            type="EncoderDecoder",
            backbone=dict(
                type="EVA02",
                arch="eva02_tiny",
                depth=depth,
                img_size=64,
                out_indices=(0, 1, 2, 3),
                norm_cfg=dict(type="BN"),
            ),
            decode_head=dict(
                type="UPerHead",
                in_channels=[192] * 4,
                in_index=[0, 1, 2, 3],
                channels=16,
                num_classes=3,
                norm_cfg=dict(type="BN"),
            ),
            auxiliary_head=dict(
                type="FCNHead",
                in_channels=192,
                in_index=2,
                channels=8,
                num_convs=1,
                num_classes=3,
                norm_cfg=dict(type="BN"),
            ),
        )
    )
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(
            type="EVA02LayerDecayOptimizerConstructor",
            optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=lr, weight_decay=wd)),
            paramwise_cfg=dict(num_layers=depth, layer_decay_rate=rate),
        )
    )
    optim = constructor(model).optimizer
    seen = {}
    for group in optim.param_groups:
        for name in group["param_names"]:
            seen[name] = (group["lr"], group["weight_decay"])
    params = dict(model.named_parameters())
    assert set(seen) == set(params)
    for name, (got_lr, got_wd) in seen.items():
        want_lr = lr * rate ** (depth + 1 - _released_layer_id(name, depth))
        want_wd = 0.0 if params[name].ndim == 1 or name.endswith(".bias") else wd
        assert got_lr == pytest.approx(want_lr, rel=1e-12), name
        assert got_wd == want_wd, name
    assert seen["backbone.pos_embed"] == (pytest.approx(lr * rate**5), wd)
    assert seen["backbone.blocks.3.mlp.w3.weight"][0] == pytest.approx(lr * rate)
    assert seen["backbone.fpn1.0.weight"][0] == pytest.approx(lr)
    assert seen["decode_head.conv_seg.weight"][0] == pytest.approx(lr)
    with pytest.raises(KeyError, match="layer_decay_rate"):
        OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(
                type="EVA02LayerDecayOptimizerConstructor",
                optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=lr)),
                paramwise_cfg=dict(num_layers=depth),
            )
        )(model)


def test_safe_loader_reads_mmengine_state_but_still_refuses_code():
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("seg_safe_load_test")
    hub.update_scalar("train/loss", 1.25)
    hub.update_scalar("train/loss", 0.75)
    hub.update_info("iter", 7)
    buf = io.BytesIO()
    torch.save({"message_hub": hub.state_dict(), "meta": {"seed": 0}}, buf)
    buf.seek(0)
    loaded = torch.load(buf)  # default weights_only=True
    assert loaded["message_hub"]["log_scalars"]["train/loss"].mean() == pytest.approx(1.0)
    assert loaded["message_hub"]["runtime_info"]["iter"] == 7

    import numpy as np
    from mmengine.logging import HistoryBuffer

    class Evil:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def __reduce__(self):
            return (self.fn, self.args)

    # arbitrary calls, and getattr beyond HistoryBuffer's public statistics methods, stay refused
    payloads = (
        Evil(os.system, ("echo unsafe",)),
        Evil(getattr, (np.ndarray, "tofile")),
        Evil(getattr, (HistoryBuffer, "__init__")),
    )
    for payload in payloads:
        buf = io.BytesIO()
        torch.save(payload, buf)
        buf.seek(0)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(buf)
