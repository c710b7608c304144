"""Checkpoint conversion (backbone.conversion and its tool): round trips give identical outputs."""

import os
import pickle
import subprocess
import sys

import pytest
import timm
import torch

from backbone import build_backbone, from_internal, load_checkpoint
from backbone import conversion as cc
from backbone.io import CheckpointError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


def _vit(name="eva02_tiny", seed=0, **kw):
    """A small model with every tensor random (zero biases or unit norms would hide mapping errors)."""
    args = dict(img_size=56, depth=2)
    args.update(kw)
    torch.manual_seed(seed)
    model = build_backbone(name, **args).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _det_vit(name="eva02_tiny", **kw):
    args = dict(img_size=64, patch_size=16, pretrain_img_size=56 * 16 // 14, use_cls_token=False)
    args.update(kw)
    return _vit(name, seed=1, **args)


def _tokens(model, x):
    with torch.no_grad():
        return model.forward_tokens(x)


def _release_file(model, tmp_path, name="eva02_Ti_pt_in21k_p14.pt"):
    """The original MIM release layout: 'module' wrapper, RoPE buffers, mask token, norm, lm_head."""
    sd = from_internal(model.state_dict(), "eva02")
    c = model.embed_dim
    head_dim = c // model.num_heads
    sd.update(
        {
            "mask_token": torch.randn(1, 1, c),
            "norm.weight": torch.ones(c),
            "norm.bias": torch.zeros(c),
            "lm_head.weight": torch.randn(1024, c),  # EVA-CLIP g teacher width (upstream #56)
            "lm_head.bias": torch.zeros(1024),
            "rope.freqs_cos": torch.randn(
                16, 16, head_dim
            ),  # the old VisionRotaryEmbedding shapes (#56, #57)
            "rope.freqs_sin": torch.randn(16, 16, head_dim),
        }
    )
    for i in range(model.depth):
        sd[f"blocks.{i}.attn.rope.freqs_cos"] = torch.randn(256, head_dim)
    path = tmp_path / name
    torch.save({"module": sd, "epoch": 10}, path)
    return path


def _convert_file(path, tmp_path, to, **options):
    """What tools/convert_checkpoint.py does (it calls ``convert_file``); the CLI itself: test_cli_*."""
    out = tmp_path / f"out_{to}.pth"
    cc.convert_file(str(path), str(out), to, **options)
    return out


@pytest.mark.parametrize("name", ["eva02_tiny", "eva02_base"])
def test_release_layout_to_every_format_gives_identical_outputs(name, tmp_path):
    src = _vit(name)
    x = torch.randn(2, 3, 56, 56)
    ref = _tokens(src, x)
    path = _release_file(src, tmp_path)
    for to in ("timm", "eva02"):
        dst = _vit(name, seed=5)
        report = load_checkpoint(dst, str(_convert_file(path, tmp_path, to)))
        assert not report.missing
        torch.testing.assert_close(_tokens(dst, x), ref, rtol=0, atol=0)
    # det / seg: patch 14 -> 16 (pos grid stays 4x4): the same as loading the release directly
    xd = torch.randn(1, 3, 64, 64)
    direct = _det_vit(name)
    load_checkpoint(direct, str(path))
    for to in ("det", "seg"):
        dst = _det_vit(name)
        load_checkpoint(dst, str(_convert_file(path, tmp_path, to)))
        torch.testing.assert_close(_tokens(dst, xd), _tokens(direct, xd), rtol=0, atol=0)


def test_upstream_56_57_rope_buffers_and_lm_head_of_a_mim_release(tmp_path):
    src = _vit()
    raw = torch.load(_release_file(src, tmp_path), weights_only=True)["module"]
    out, report = cc.convert(raw, "eva02")
    assert set(report.carried) == {"mask_token", "norm.weight", "norm.bias", "lm_head.weight", "lm_head.bias"}
    assert torch.equal(out["model"]["lm_head.weight"], raw["lm_head.weight"])
    assert not any("rope" in k for k in out["model"])
    assert "rope.freqs_cos" in report.dropped and "blocks.1.attn.rope.freqs_cos" in report.dropped
    det, report = cc.convert(raw, "det")
    assert "lm_head.weight" in report.dropped and report.dropped["lm_head.weight"] == [1024, 192]


@pytest.mark.parametrize(
    "name, timm_name", [("eva02_tiny", "eva02_tiny_patch14_224"), ("eva02_base", "eva02_base_patch14_224")]
)
def test_timm_output_loads_into_timm_eva_with_the_same_features(name, timm_name, tmp_path):
    src = _vit(name)
    out, _ = cc.convert(dict(src.state_dict()), "timm")
    model = timm.create_model(timm_name, pretrained=False, img_size=56, depth=2, num_classes=0).eval()
    result = model.load_state_dict(out, strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= {"fc_norm.weight", "fc_norm.bias", "norm.weight", "norm.bias"}
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), _tokens(src, x), rtol=1e-4, atol=1e-4)
    # and back: timm -> eva02 -> internal is the identity
    back, report = cc.convert(out, "eva02")
    assert report.layout == "timm"
    dst = _vit(name, seed=9)
    load_checkpoint(dst, back)
    torch.testing.assert_close(_tokens(dst, x), _tokens(src, x), rtol=0, atol=0)


def test_pretraining_checkpoint_to_detector_init(tmp_path):
    from pretraining import MIMStudent

    student = MIMStudent(_vit(), 32)
    path = tmp_path / "checkpoint-last.pth"
    torch.save({"format": "eva02_mim_pretrain", "model": student.state_dict(), "step": 3}, path)
    out = torch.load(_convert_file(path, tmp_path, "det"), weights_only=True)
    keys = set(out["model"])
    assert all(k.startswith("backbone.net.") for k in keys)
    assert "backbone.net.blocks.1.mlp.w12.weight" in keys and "backbone.net.cls_token" not in keys
    assert out["model"]["backbone.net.patch_embed.proj.weight"].shape == (192, 3, 16, 16)
    direct, dst = _det_vit(), _det_vit()
    load_checkpoint(direct, {"model": student.vit.state_dict()})
    load_checkpoint(dst, out)
    xd = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_tokens(dst, xd), _tokens(direct, xd), rtol=0, atol=0)


def _detector_sd(net, num_classes):
    """A detectron2 Cascade Mask R-CNN state dict of this project: backbone.net.* + neck and heads."""
    sd = {f"backbone.net.{k}": v for k, v in net.state_dict().items()}
    sd["backbone.simfp_2.0.weight"] = torch.randn(8, 192, 2, 2)
    sd["proposal_generator.rpn_head.conv.weight"] = torch.randn(8, 8, 3, 3)
    sd["roi_heads.box_head.0.fc1.weight"] = torch.randn(16, 32)
    for s in range(3):
        sd[f"roi_heads.box_predictor.{s}.cls_score.weight"] = torch.randn(num_classes + 1, 16)
        sd[f"roi_heads.box_predictor.{s}.cls_score.bias"] = torch.randn(num_classes + 1)
        sd[f"roi_heads.box_predictor.{s}.bbox_pred.weight"] = torch.randn(4, 16)  # class-agnostic
    sd["roi_heads.mask_head.predictor.weight"] = torch.randn(num_classes, 8, 1, 1)
    sd["roi_heads.mask_head.predictor.bias"] = torch.randn(num_classes)
    return sd


def test_objects365_detector_to_coco_and_lvis(tmp_path):
    net = _det_vit()
    path = tmp_path / "o365.pth"
    torch.save({"model": _detector_sd(net, 365), "iteration": 100}, path)
    out = torch.load(_convert_file(path, tmp_path, "det", num_classes=80), weights_only=True)["model"]
    assert out["roi_heads.box_predictor.2.cls_score.weight"].shape == (81, 16)
    assert out["roi_heads.mask_head.predictor.weight"].shape == (80, 8, 1, 1)
    src = torch.load(path, weights_only=True)["model"]
    for key in ("backbone.simfp_2.0.weight", "proposal_generator.rpn_head.conv.weight",
                "roi_heads.box_head.0.fc1.weight", "roi_heads.box_predictor.0.bbox_pred.weight"):  # fmt: skip
        assert torch.equal(out[key], src[key]), key
    for key, value in net.state_dict().items():  # backbone untouched (already patch 16, same grid)
        assert torch.equal(out["backbone.net." + key], value), key
    raw = torch.load(path, weights_only=True)["model"]
    lvis, report = cc.convert(raw, "det", drop_class_heads=True)
    assert "roi_heads.box_predictor.1.cls_score.weight" in report.dropped
    assert not any("cls_score" in k or "mask_head.predictor" in k for k in lvis["model"])
    assert "roi_heads.box_predictor.1.bbox_pred.weight" in lvis["model"]


def test_detector_and_seg_round_trip_through_release_layout(tmp_path):
    net = _det_vit("eva02_base")
    det_path = tmp_path / "det.pth"
    torch.save({"model": _detector_sd(net, 5)}, det_path)
    eva = _convert_file(det_path, tmp_path, "eva02")
    seg = _convert_file(eva, tmp_path, "seg")
    back = torch.load(_convert_file(seg, tmp_path, "det"), weights_only=True)["model"]
    for key, value in net.state_dict().items():
        assert torch.equal(back["backbone.net." + key], value), key
    seg_sd = torch.load(seg, weights_only=True)["state_dict"]
    assert all(k.startswith("backbone.") and not k.startswith("backbone.net.") for k in seg_sd)


def test_upstream_153_tiny_p14_to_p16_with_module_wrapper(tmp_path):
    src = _vit("eva02_tiny", img_size=224, depth=1)
    path = _release_file(src, tmp_path)
    out = torch.load(_convert_file(path, tmp_path, "det"), weights_only=True)["model"]
    assert out["backbone.net.patch_embed.proj.weight"].shape == (192, 3, 16, 16)
    assert out["backbone.net.pos_embed"].shape == (1, 1 + 14 * 14, 192)  # 16x16 -> 14x14, cls slot kept


def test_upstream_160_pos_embed_14x14_serves_a_large_detector_input(tmp_path):
    src = _vit("eva02_tiny", img_size=224, depth=1)
    path = _release_file(src, tmp_path)
    conv = _convert_file(path, tmp_path, "det")
    # a detector at 256 px / patch 16 keeps pretrain_img_size=224 (grid 14) and resizes at run time
    kw = dict(img_size=256, patch_size=16, pretrain_img_size=224, use_cls_token=False, depth=1)
    a, b = _vit("eva02_tiny", seed=3, **kw), _vit("eva02_tiny", seed=4, **kw)
    load_checkpoint(a, str(path))
    report = load_checkpoint(b, str(conv))
    assert "pos_embed" in report.resized  # the cls slot is dropped by the loader, the 14x14 grid kept
    x = torch.randn(1, 3, 256, 256)
    torch.testing.assert_close(_tokens(b, x), _tokens(a, x), rtol=0, atol=0)


def test_bad_inputs_give_clear_errors(tmp_path):
    src = _vit()
    good = tmp_path / "good.pt"
    torch.save({"model": src.state_dict()}, good)
    out = tmp_path / "out.pth"

    def fails(path, match, **options):
        with pytest.raises(CheckpointError) as info:
            cc.convert_file(str(path), str(out), "det", **options)
        assert match in str(info.value), info.value
        assert not out.exists()

    fails(good, "checkpoint is custom (width 192, depth 2", model="eva02_base")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    fails(truncated, "truncated or corrupt")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(pickle.dumps({"model": object()}, protocol=2))
    fails(junk, "--trust-pickle")
    fails(tmp_path / "absent.pt", "no such checkpoint file")
    sd = dict(src.state_dict())
    partial = {k: v for k, v in sd.items() if not k.startswith("blocks.")}
    partial.update({k: v for k, v in sd.items() if k.startswith(("blocks.1.mlp.", "blocks.1.attn.qkv"))})
    torch.save(partial, tmp_path / "partial.pt")
    fails(tmp_path / "partial.pt", "leave the backbone mostly untouched")
    torch.save({"fc.weight": torch.randn(3, 3)}, tmp_path / "resnet.pt")
    fails(tmp_path / "resnet.pt", "does not look like a ViT")
    gelu = timm.create_model("eva_giant_patch14_224", pretrained=False, depth=1, embed_dim=64, num_heads=2)
    torch.save(gelu.state_dict(), tmp_path / "eva01.pt")  # EVA-01: GELU MLP, not an EVA-02
    fails(tmp_path / "eva01.pt", "do not fit an EVA-02 ViT")


def test_a_few_missing_tensors_are_reported_not_fatal():
    sd = dict(_vit().state_dict())
    del sd["blocks.1.norm2.weight"]
    _, report = cc.convert(sd, "timm")
    assert report.missing == {"blocks.1.norm2.weight": [192]}
    assert "missing        blocks.1.norm2.weight: [192]" in report.text()


def test_cli_prints_the_report(tmp_path):
    src = _vit()
    path = _release_file(src, tmp_path)
    out = tmp_path / "det.pth"
    run = subprocess.run(
        [sys.executable, "tools/convert_checkpoint.py", "--input", path, "--output", out, "--to", "det"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "original EVA-02 checkpoint, 'eva02' layout" in run.stdout
    assert "resized        patch_embed.proj.weight: [192, 3, 14, 14] -> [192, 3, 16, 16]" in run.stdout
    assert "dropped        lm_head.weight: [1024, 192]" in run.stdout
    again = subprocess.run(
        [sys.executable, "tools/convert_checkpoint.py", "--input", path, "--output", out, "--to", "det"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 2 and "exists" in again.stderr


def test_eva_clip_tower_to_detector_carries_the_inner_attention_norm():
    clip = timm.create_model("eva02_base_patch16_clip_224", pretrained=False, num_classes=512, depth=1)
    raw = {"visual." + k: v for k, v in clip.state_dict().items()}
    raw = {
        k.replace("mlp.norm.", "mlp.ffn_ln.").replace("attn.norm.", "attn.inner_attn_ln."): v
        for k, v in raw.items()
    }
    raw["text.positional_embedding"] = torch.zeros(77, 512)
    out, report = cc.convert(raw, "det")
    assert report.kind == "EVA-CLIP" and report.model.startswith("custom (width 768, depth 1")
    assert "inner attention LN True" in report.model
    assert torch.equal(
        out["model"]["backbone.net.blocks.0.attn.inner_attn_ln.weight"],
        clip.state_dict()["blocks.0.attn.norm.weight"],
    )
    assert report.dropped["head.weight"] == [512, 768]
    assert "text.positional_embedding" in report.dropped
    assert torch.equal(
        out["model"]["backbone.net.blocks.0.mlp.w3.weight"], clip.state_dict()["blocks.0.mlp.fc2.weight"]
    )
    gamma = {**raw, "visual.blocks.0.gamma_1": torch.ones(768)}  # layer scale: no counterpart in EVA-02
    with pytest.raises(CheckpointError, match=r"block tensors with no counterpart .*blocks.0.gamma_1"):
        cc.convert(gamma, "det")


def test_seg_output_loads_into_the_mmseg_backbone(tmp_path):
    pytest.importorskip("mmseg")
    from seg.backbone import EVA02

    src = _vit()
    path = _release_file(src, tmp_path)
    conv = _convert_file(path, tmp_path, "seg")
    kw = dict(arch="eva02_tiny", img_size=64, depth=2, out_indices=(0, 1, 1, 1), norm_cfg=dict(type="BN"))
    seg_model = EVA02(pretrained=str(conv), **kw).eval()
    seg_model.init_weights()
    direct = _det_vit(use_cls_token=True, pretrain_img_size=64)
    load_checkpoint(direct, str(path))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_tokens(seg_model, x), _tokens(direct, x), rtol=0, atol=0)


def test_det_output_loads_into_the_detectron2_backbone(tmp_path):
    pytest.importorskip("detectron2")
    from det.vit import EVA02Net

    src = _vit()
    conv = _convert_file(_release_file(src, tmp_path), tmp_path, "det")
    kw = dict(
        embed_dim=192, depth=2, num_heads=3, sub_ln=False, img_size=64, patch_size=16, pretrain_img_size=64
    )
    net = EVA02Net(window_size=2, window_block_indexes=[0], **kw).eval()
    report = load_checkpoint(net, str(conv))
    assert report.prefix == "backbone.net." and not report.missing
    direct = EVA02Net(window_size=2, window_block_indexes=[0], **kw).eval()
    load_checkpoint(direct, str(tmp_path / "eva02_Ti_pt_in21k_p14.pt"))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(net(x)["last_feat"], direct(x)["last_feat"], rtol=0, atol=0)


def test_mmseg_training_checkpoint_with_message_hub_converts_without_trust_pickle(tmp_path):
    pytest.importorskip("mmseg")
    import numpy as np
    from mmengine.logging import HistoryBuffer

    src = _vit()
    sd = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    sd["backbone.fpn1.0.weight"] = torch.randn(192, 192, 2, 2)
    sd["decode_head.conv_seg.weight"] = torch.randn(150, 512, 1, 1)
    ckpt = {
        "meta": {"iter": np.int64(160), "seed": 0},
        "state_dict": sd,
        "message_hub": {"log_scalars": {"train/loss": HistoryBuffer(np.array([1.0, 0.5]), np.array([1, 1]))}},
    }
    path = tmp_path / "iter_160.pth"
    torch.save(ckpt, path)
    out, report = cc.convert(cc.read_input(str(path)), "timm")
    assert report.kind == "mmseg"
    assert "decode_head.conv_seg.weight" in report.dropped and "fpn1.0.weight" in report.dropped
    dst = _vit(seed=7)
    load_checkpoint(dst, out)
    x = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(_tokens(dst, x), _tokens(src, x), rtol=0, atol=0)
