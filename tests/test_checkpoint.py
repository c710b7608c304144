"""Checkpoint loading: formats, geometry resizing, round trips and bad inputs."""

import pickle

import pytest
import timm
import torch
import torch.nn.functional as F

from backbone import CheckpointError, build_backbone, from_internal, load_checkpoint, to_internal


def _random_model(name="eva02_tiny", **kwargs):
    model = build_backbone(name, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _out(model, size=(224, 224)):
    with torch.no_grad():
        return model.forward_tokens(torch.ones(1, 3, *size) * 0.3 + torch.linspace(0, 1, size[1]))


@pytest.mark.parametrize("name", ["eva02_tiny", "eva02_base"])
def test_round_trip_timm_ours_eva02_ours(name, tmp_path):
    timm_model = timm.create_model(f"{name}_patch14_224", pretrained=False, num_classes=0).eval()
    with torch.no_grad():
        for p in timm_model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    first = build_backbone(name).eval()
    load_checkpoint(first, timm_model.state_dict())
    release = from_internal(first.state_dict(), "eva02")
    if name == "eva02_base":  # the release keeps q/k/v and w1/w2 apart for base/large
        assert "blocks.0.attn.q_proj.weight" in release and "blocks.0.mlp.w1.weight" in release
    # Wrap like a released MIM checkpoint, with its pre-training extras and RoPE buffers.
    release.update(
        {
            "mask_token": torch.zeros(1, 1, first.embed_dim),
            "lm_head.weight": torch.zeros(4, first.embed_dim),
            "rope.freqs_cos": torch.zeros(256, 64),
            "norm.weight": torch.ones(first.embed_dim),
        }
    )
    path = tmp_path / "release.pt"
    torch.save({"module": release}, path)
    second = build_backbone(name).eval()
    report = load_checkpoint(second, path)
    assert report.layout == "eva02" and not report.missing and not report.unexpected
    assert {"mask_token", "lm_head.weight", "rope.freqs_cos", "norm.weight"} <= set(report.dropped)
    assert torch.equal(_out(second), _out(first))
    with torch.no_grad():
        ref = timm_model.forward_features(torch.ones(1, 3, 224, 224) * 0.3 + torch.linspace(0, 1, 224))
    # Same weights, different kernels' summation order: equal up to float32 rounding, not bitwise.
    assert ((_out(second) - ref).norm() / ref.norm()).item() < 1e-5


def test_patch_14_to_16_resize_follows_the_release(tmp_path):
    source = _random_model()  # 224 px, patch 14: 16x16 position grid with cls slot
    target = build_backbone("eva02_tiny", img_size=224, patch_size=16, use_cls_token=False)
    report = load_checkpoint(target, {"model": source.state_dict()})
    assert report.resized["patch_embed.proj.weight"] == ((192, 3, 14, 14), (192, 3, 16, 16))
    assert report.resized["pos_embed"] == ((1, 257, 192), (1, 196, 192))
    expected_kernel = F.interpolate(
        source.patch_embed.proj.weight, size=(16, 16), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(target.patch_embed.proj.weight, expected_kernel)
    grid = source.pos_embed[:, 1:].reshape(1, 16, 16, 192).permute(0, 3, 1, 2)
    expected_pos = F.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False)
    torch.testing.assert_close(target.pos_embed, expected_pos.permute(0, 2, 3, 1).reshape(1, 196, 192))
    # and back to patch 14 (pinv option too)
    back = build_backbone("eva02_tiny", use_cls_token=False)
    load_checkpoint(back, target.state_dict(), patch_resize="pinv")
    assert back.patch_embed.proj.weight.shape == (192, 3, 14, 14)


def test_detectron2_and_mmseg_and_clip_wrappers_are_recognised():
    source = _random_model(use_cls_token=False)
    sd = source.state_dict()
    d2 = {
        "model": {
            **{f"backbone.net.{k}": v for k, v in sd.items()},
            "roi_heads.box_predictor.weight": torch.zeros(3, 3),
        },
        "iteration": 7,
    }
    mmseg = {
        "state_dict": {
            **{f"backbone.{k}": v for k, v in sd.items()},
            "decode_head.conv_seg.weight": torch.zeros(2),
        },
        "meta": {},
    }
    clip = {
        **{f"visual.{k}": v for k, v in from_internal(sd, "eva02").items()},
        "visual.head.weight": torch.zeros(8, 192),
        "text.token_embedding.weight": torch.zeros(4, 4),
    }
    for wrapped, prefix in ((d2, "backbone.net."), (mmseg, "backbone."), (clip, "visual.")):
        model = build_backbone("eva02_tiny", use_cls_token=False).eval()
        report = load_checkpoint(model, wrapped)
        assert report.prefix == prefix and not report.missing
        assert torch.equal(_out(model), _out(source))


def test_checkpoint_of_another_size_is_refused(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(build_backbone("eva02_small").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"small.pth: checkpoint is eva02_small .* model is eva02_tiny"):
        load_checkpoint(build_backbone("eva02_tiny"), path)


def test_random_file_truncated_file_and_foreign_pickles(tmp_path):
    model = build_backbone("eva02_tiny")
    random_file = tmp_path / "random.bin"
    random_file.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    good = tmp_path / "good.pth"
    torch.save(model.state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    class_pickle = tmp_path / "object.pkl"
    class_pickle.write_bytes(pickle.dumps(pytest.approx(1.0)))
    plain_pickle = tmp_path / "plain.pkl"
    torch.save({"epoch": 3, "lr": 0.1}, plain_pickle)
    cases = {
        random_file: "not a readable PyTorch checkpoint",
        truncated: "not a readable PyTorch checkpoint",
        class_pickle: "refusing to unpickle",
        plain_pickle: "no tensors found",
        tmp_path / "absent.pth": "no such checkpoint file",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(model, path)
        assert str(path) in str(info.value)
        err = info.value  # no torch-internal traceback chained to the error
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_keys_never_leave_the_model_silently_random():
    source = _random_model()
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith("blocks.5.")}
    model = build_backbone("eva02_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="backbone tensors missing"):
        load_checkpoint(model, sd)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded
    report = load_checkpoint(model, sd, strict=False)
    assert len(report.missing) == 13 and all(k.startswith("blocks.5.") for k in report.missing)
    few = {k: v for k, v in source.state_dict().items() if k.startswith(("blocks.0.", "patch_embed"))}
    few["blocks.11.norm1.weight"] = source.blocks[11].norm1.weight  # keeps the detected depth at 12
    with pytest.raises(CheckpointError, match="refusing to leave the model random"):
        load_checkpoint(build_backbone("eva02_tiny"), few, strict=False)


def test_to_internal_reports_unknown_layouts():
    with pytest.raises(KeyError, match="patch_embed.proj.weight"):
        to_internal({"conv1.weight": torch.zeros(1)})


# The released EVA-02 layout, from the release's model code (EVA-02/asuka): names of
# VisionTransformerForMaskedImageModeling (modeling_pretrain.py, MIM checkpoints, saved under
# 'module' by DeepSpeed) and VisionTransformer (modeling_finetune.py, fine-tuned checkpoints under
# 'model', mean pooling: fc_norm + head). Tiny/small use xformers' packed SwiGLU (mlp.w12/w3) and a
# fused qkv; base/large (subln, naiveswiglu) separate q/k/v projections and mlp.w1/w2/ffn_ln/w3. A
# RoPE module is registered at the top and in every attention. Shapes: C width, H SwiGLU hidden,
# G grid tokens (16 x 16 at 224 px / patch 14), D head dim, T teacher dim, K classes.
RELEASE_TOP = {
    "cls_token": "1 1 C",
    "pos_embed": "1 G+1 C",
    "patch_embed.proj.weight": "C 3 14 14",
    "patch_embed.proj.bias": "C",
    "rope.freqs_cos": "G D",
    "rope.freqs_sin": "G D",
}
RELEASE_MIM_HEAD = {
    "mask_token": "1 1 C",
    "norm.weight": "C",
    "norm.bias": "C",
    "lm_head.weight": "T C",
    "lm_head.bias": "T",
}
RELEASE_FT_HEAD = {"fc_norm.weight": "C", "fc_norm.bias": "C", "head.weight": "K C", "head.bias": "K"}
RELEASE_BLOCK = {
    "norm1.weight": "C",
    "norm1.bias": "C",
    "attn.q_bias": "C",
    "attn.v_bias": "C",
    "attn.proj.weight": "C C",
    "attn.proj.bias": "C",
    "attn.rope.freqs_cos": "G D",
    "attn.rope.freqs_sin": "G D",
    "norm2.weight": "C",
    "norm2.bias": "C",
    "mlp.w3.weight": "C H",
    "mlp.w3.bias": "C",
}
RELEASE_BLOCK_TINY_SMALL = {"attn.qkv.weight": "3C C", "mlp.w12.weight": "2H C", "mlp.w12.bias": "2H"}
RELEASE_BLOCK_BASE_LARGE = {
    "attn.q_proj.weight": "C C",
    "attn.k_proj.weight": "C C",
    "attn.v_proj.weight": "C C",
    "mlp.w1.weight": "H C",
    "mlp.w1.bias": "H",
    "mlp.w2.weight": "H C",
    "mlp.w2.bias": "H",
    "mlp.ffn_ln.weight": "H",
    "mlp.ffn_ln.bias": "H",
}
RELEASE_SIZES = {
    "eva02_tiny": (192, 3),
    "eva02_small": (384, 6),
    "eva02_base": (768, 12),
    "eva02_large": (1024, 16),
}


def _release_checkpoint(name: str, kind: str, depth: int) -> dict:
    """A released EVA-02 file of this size and kind ('mim' or 'finetuned'), random tensors."""
    width, heads = RELEASE_SIZES[name]
    hidden = int(width * 4 * 2 / 3)
    dims = {"1": 1, "3": 3, "14": 14, "C": width, "3C": 3 * width, "H": hidden, "2H": 2 * hidden,
            "G": 256, "G+1": 257, "D": width // heads, "T": 1024, "K": 10}  # fmt: skip
    block = {**RELEASE_BLOCK, **(RELEASE_BLOCK_TINY_SMALL if width < 768 else RELEASE_BLOCK_BASE_LARGE)}
    table = {**RELEASE_TOP, **(RELEASE_MIM_HEAD if kind == "mim" else RELEASE_FT_HEAD)}
    table.update({f"blocks.{i}.{k}": v for i in range(depth) for k, v in block.items()})
    sd = {}
    for key, shape in table.items():
        size = [dims[s] for s in shape.split()]
        gain = key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "_ln.weight"))
        sd[key] = 1.0 + 0.1 * torch.randn(size) if gain else 0.05 * torch.randn(size)
    if kind == "mim":
        return {"module": sd}  # DeepSpeed's mp_rank_00_model_states.pt
    return {"model": sd, "epoch": 99}


@pytest.mark.parametrize("kind", ["mim", "finetuned"])
@pytest.mark.parametrize("name", list(RELEASE_SIZES))
def test_release_layout_from_release_names_loads_like_timms_filter(name, kind):
    """timm's checkpoint_filter_fn reads released EVA-02 files: ours must read them to the same network."""
    from timm.models.eva import checkpoint_filter_fn

    depth = 2 if name in ("eva02_tiny", "eva02_small") else 1  # block names do not change with depth
    ckpt = _release_checkpoint(name, kind, depth)
    ref = timm.create_model(
        f"{name}_patch14_224", pretrained=False, depth=depth, num_classes=0 if kind == "mim" else 10
    )
    ref.load_state_dict(checkpoint_filter_fn(ckpt, ref), strict=True)
    ours = build_backbone(name, depth=depth).eval()
    report = load_checkpoint(ours, ckpt)
    assert report.layout == "eva02" and report.prefix == ""
    assert not report.missing and not report.unexpected
    heads = RELEASE_MIM_HEAD if kind == "mim" else RELEASE_FT_HEAD
    assert set(report.dropped) == {*heads, "rope.freqs_cos", "rope.freqs_sin"} | {
        f"blocks.{i}.attn.rope.freqs_{f}" for i in range(depth) for f in ("cos", "sin")
    }
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.eval().forward_features(x)  # mean pooling: no norm on the tokens
        got = ours.forward_tokens(x)
    assert ((expected - got).norm() / expected.norm()).item() < 1e-5


def test_reading_keeps_process_wide_safe_globals(tmp_path):
    # seg registers mmengine's types process-wide and also passes them to the reader; leaving the
    # reader's safe_globals context must not drop that registration (mmengine's own torch.load needs it).
    import fractions

    from backbone.io import read_checkpoint

    torch.serialization.add_safe_globals([fractions.Fraction])
    try:
        path = tmp_path / "f.pth"
        torch.save({"w": torch.ones(2), "r": fractions.Fraction(1, 3)}, path)
        assert read_checkpoint(path, allow=[fractions.Fraction])["r"] == fractions.Fraction(1, 3)
        assert fractions.Fraction in torch.serialization.get_safe_globals()
        assert torch.load(path, weights_only=True)["r"] == fractions.Fraction(1, 3)
    finally:
        torch.serialization.clear_safe_globals()
        import seg.safe_load

        seg.safe_load.allow_mmengine_checkpoints()
