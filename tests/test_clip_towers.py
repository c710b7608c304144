"""EVA-02-CLIP vision towers load into the backbone as what they are (inner attention LayerNorm).

Independent references, random weights, no download: timm's ``eva02_*_clip_*`` towers, OpenCLIP's
``EVA02-*`` models (timm towers under ``visual.trunk.``) and the EVA-CLIP release layout, built from
the release's own names and read by timm's ``checkpoint_filter_fn``. Large towers keep only a few
blocks for the numerical comparison; every other dimension is the tower's.
"""

import functools
import logging

import pytest
import timm
import torch
from timm.models.eva import checkpoint_filter_fn

from backbone import PRESETS, CheckpointError, build_backbone, load_checkpoint
from backbone import conversion as cc

# timm tower -> our preset, its overrides, and the number of blocks kept for the numerical checks.
TOWERS = {
    "B/16": ("eva02_base_patch16_clip_224", "eva02_base_clip", {}, 2),
    "L/14": ("eva02_large_patch14_clip_224", "eva02_large_clip", {}, 1),
    "L/14-336": ("eva02_large_patch14_clip_336", "eva02_large_clip", {"img_size": 336}, 1),
}


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Every tensor random, so that zero biases or unit norms cannot hide a mapping error."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


@functools.cache
def _timm_tower(key: str) -> torch.nn.Module:
    name, _, _, depth = TOWERS[key]
    torch.manual_seed(0)
    return _perturb(timm.create_model(name, pretrained=False, depth=depth))


def _ours(key: str, **kw) -> torch.nn.Module:
    _, preset, overrides, depth = TOWERS[key]
    return build_backbone(preset, **{**overrides, "depth": depth, **kw}).eval()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm()).item()


def _assert_equals_tower(ours: torch.nn.Module, tower: torch.nn.Module, size: int) -> None:
    """Our tokens equal the tower's tokens before its final norm, and with that norm its forward_features."""
    x = torch.randn(1, 3, size, size)
    seen = {}

    def keep_input(_module, args, _output) -> None:
        seen["before_norm"] = args[0]

    hook = tower.norm.register_forward_hook(keep_input)
    with torch.no_grad():
        features = tower.forward_features(x)
        got = ours.forward_tokens(x)
        hook.remove()
        assert got.shape == seen["before_norm"].shape == features.shape
        assert _rel_err(seen["before_norm"], got) < 1e-4
        assert _rel_err(features, tower.norm(got)) < 1e-4


@pytest.mark.parametrize("key", list(TOWERS))
def test_timm_tower_loads_and_equals_it(key):
    tower = _timm_tower(key)
    ours = _ours(key)
    report = load_checkpoint(ours, tower.state_dict())
    assert report.layout == "timm" and not report.missing and not report.unexpected
    assert sorted(report.dropped) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert "blocks.0.attn.inner_attn_ln.weight" in report.loaded
    _assert_equals_tower(ours, tower, ours.img_size[0])


def test_full_size_presets():
    """The towers' parameter counts, by hand from timm's eva02_base/large (tests/test_backbone_parity.py).

    B/16: patch 16 instead of 14 (768 x 3 x (16^2 - 14^2)), a 14 x 14 instead of 16 x 16 position grid
    (-60 x 768), and an inner LayerNorm (2 x 768) in each of 12 blocks. L/14: 24 inner LayerNorms.
    """
    base = build_backbone("eva02_base_clip")
    expected = 85_757_184 + 768 * 3 * (16**2 - 14**2) - 60 * 768 + 12 * 2 * 768
    assert sum(p.numel() for p in base.parameters()) == expected == 85_867_776
    assert (base.depth, base.patch_size, base.grid, base.pos_grid) == (12, 16, (14, 14), (14, 14))
    assert all(blk.attn.inner_attn_ln is not None for blk in base.blocks)
    large = {k: v for k, v in PRESETS["eva02_large_clip"].items() if k != "inner_attn_norm"}
    assert large == PRESETS["eva02_large"] and PRESETS["eva02_large_clip"]["inner_attn_norm"]


# ------------------------------------------------------------------------------------------- OpenCLIP
def _open_clip_model(name: str, monkeypatch, depth: int | None = None) -> torch.nn.Module:
    """OpenCLIP's model, random init; ``depth`` keeps the first blocks of its timm trunk."""
    open_clip = pytest.importorskip("open_clip")
    if depth is not None:  # OpenCLIP passes no depth to timm: give its create_model call one
        monkeypatch.setattr(
            open_clip.timm_model.timm, "create_model", functools.partial(timm.create_model, depth=depth)
        )
    torch.manual_seed(0)
    text = {**open_clip.get_model_config(name)["text_cfg"], "layers": 1}  # the text tower is not under test
    return open_clip.create_model(name, pretrained=None, text_cfg=text).eval()


def test_open_clip_b16_loads_and_equals_its_tower(monkeypatch):
    model = _open_clip_model("EVA02-B-16", monkeypatch, depth=2)
    tower = _perturb(model.visual.trunk)
    sd = model.state_dict()
    assert "visual.trunk.blocks.0.attn.norm.weight" in sd and "text.text_projection" in sd
    ours = _ours("B/16")
    report = load_checkpoint(ours, sd)
    assert report.prefix == "visual.trunk." and not report.missing and not report.unexpected
    _assert_equals_tower(ours, tower, 224)


def test_open_clip_l14_loads_and_equals_its_tower(monkeypatch):
    model = _open_clip_model("EVA02-L-14", monkeypatch, depth=1)
    tower = _perturb(model.visual.trunk)
    ours = _ours("L/14")
    report = load_checkpoint(ours, model.state_dict())
    assert report.prefix == "visual.trunk." and not report.missing and not report.unexpected
    _assert_equals_tower(ours, tower, 224)


# ---------------------------------------------------------------------------- EVA-CLIP release layout
# Names of the release's EVAVisionTransformer (EVA-CLIP/rei/eva_clip/eva_vit_model.py) as the
# EVA02-CLIP-B-16 / L-14 configs build it: qkv_bias, subln (q/k/v_proj + inner_attn_ln), naiveswiglu
# (w1/w2/ffn_ln/w3), a RotaryEmbeddingFast registered at the top and in every attention, cls-token
# pooling (final norm, no fc_norm) and the CLIP projection ``head``. Shapes: C width, H SwiGLU
# hidden, G grid tokens, D head dim, P patch, E CLIP embedding.
EVA_CLIP_TOP = {
    "cls_token": "1 1 C",
    "pos_embed": "1 G+1 C",
    "patch_embed.proj.weight": "C 3 P P",
    "patch_embed.proj.bias": "C",
    "rope.freqs_cos": "G D",
    "rope.freqs_sin": "G D",
    "norm.weight": "C",
    "norm.bias": "C",
    "head.weight": "E C",
    "head.bias": "E",
}
EVA_CLIP_BLOCK = {
    "norm1.weight": "C",
    "norm1.bias": "C",
    "attn.q_bias": "C",
    "attn.v_bias": "C",
    "attn.q_proj.weight": "C C",
    "attn.k_proj.weight": "C C",
    "attn.v_proj.weight": "C C",
    "attn.inner_attn_ln.weight": "C",
    "attn.inner_attn_ln.bias": "C",
    "attn.proj.weight": "C C",
    "attn.proj.bias": "C",
    "attn.rope.freqs_cos": "G D",
    "attn.rope.freqs_sin": "G D",
    "norm2.weight": "C",
    "norm2.bias": "C",
    "mlp.w1.weight": "H C",
    "mlp.w1.bias": "H",
    "mlp.w2.weight": "H C",
    "mlp.w2.bias": "H",
    "mlp.ffn_ln.weight": "H",
    "mlp.ffn_ln.bias": "H",
    "mlp.w3.weight": "C H",
    "mlp.w3.bias": "C",
}
# EVA02-CLIP-B-16 / L-14 / L-14-336 vision configs: width, heads (head_width 64), patch, image, CLIP dim.
EVA_CLIP_TOWERS = {
    "B/16": (768, 12, 16, 224, 512),
    "L/14": (1024, 16, 14, 224, 768),
    "L/14-336": (1024, 16, 14, 336, 768),
}


def _random_tensor(name: str, shape: list[int]) -> torch.Tensor:
    if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "_ln.weight")):
        return 1.0 + 0.1 * torch.randn(shape)  # LayerNorm gains around one
    return 0.05 * torch.randn(shape)


def eva_clip_release_checkpoint(key: str, depth: int) -> dict[str, torch.Tensor]:
    """An EVA-CLIP file as released: ``visual.`` tower from the table above, plus text-tower tensors."""
    width, heads, patch, img, embed = EVA_CLIP_TOWERS[key]
    grid = (img // patch) ** 2
    dims = {"1": 1, "3": 3, "C": width, "H": int(width * 2.6667), "G": grid, "G+1": grid + 1,
            "D": width // heads, "P": patch, "E": embed}  # fmt: skip
    table = dict(EVA_CLIP_TOP)
    table.update({f"blocks.{i}.{k}": v for i in range(depth) for k, v in EVA_CLIP_BLOCK.items()})
    sd = {f"visual.{k}": _random_tensor(k, [dims[s] for s in v.split()]) for k, v in table.items()}
    sd["text.transformer.resblocks.0.attn.in_proj_weight"] = torch.randn(3 * embed, embed)
    sd["logit_scale"] = torch.tensor(4.6)
    return sd


@pytest.mark.parametrize("key", ["B/16", "L/14"])
def test_eva_clip_release_layout_loads_like_timms_filter(key):
    name, _, _, depth = TOWERS[key]
    sd = eva_clip_release_checkpoint(key, depth)
    tower = timm.create_model(name, pretrained=False, depth=depth, num_classes=EVA_CLIP_TOWERS[key][4]).eval()
    tower.load_state_dict(checkpoint_filter_fn(sd, tower), strict=True)
    ours = _ours(key)
    report = load_checkpoint(ours, sd)
    assert report.layout == "eva02" and report.prefix == "visual."
    assert not report.missing and not report.unexpected
    assert {"rope.freqs_cos", "blocks.0.attn.rope.freqs_sin", "head.weight", "norm.weight"} <= set(
        report.dropped
    )
    _assert_equals_tower(ours, tower, EVA_CLIP_TOWERS[key][3])


# ------------------------------------------------------------------------------- what does not fit
def test_clip_tower_into_a_model_without_the_slot_fails_strict_or_not():
    plain = build_backbone("eva02_base", patch_size=16, depth=2).eval()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    release = eva_clip_release_checkpoint("B/16", depth=2)
    for strict in (True, False):
        with pytest.raises(
            CheckpointError, match=r"EVA-02-CLIP .*inner_attn_norm=True.*eva02_base_clip"
        ) as info:
            load_checkpoint(plain, _timm_tower("B/16").state_dict(), strict=strict)
        assert "'blocks.0.attn.norm.weight'" in str(info.value)  # timm's name of the tensor at fault
        with pytest.raises(CheckpointError, match=r"'visual.blocks.0.attn.inner_attn_ln.weight'"):
            load_checkpoint(plain, release, strict=strict)
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())  # left untouched


def test_plain_checkpoint_into_a_clip_preset_fails():
    plain = build_backbone("eva02_base", patch_size=16, depth=2)
    with pytest.raises(CheckpointError, match=r"has an inner attention LayerNorm .* inner_attn_norm=False"):
        load_checkpoint(_ours("B/16"), plain.state_dict(), strict=False)


def test_layer_scale_has_no_slot_and_fails_under_strict(caplog):
    """Any tensor without a slot fails under strict, and is a warning (not INFO) otherwise."""
    sd = dict(_timm_tower("L/14-336").state_dict())
    sd["blocks.0.gamma_1"] = torch.ones(1024)  # EVA-CLIP's layer scale (ls_init_value), not in EVA-02
    with pytest.raises(CheckpointError, match=r"1 checkpoint tensors have no slot .*'blocks.0.gamma_1'"):
        load_checkpoint(_ours("L/14-336"), sd)
    with caplog.at_level(logging.WARNING, logger="backbone.checkpoint"):
        report = load_checkpoint(_ours("L/14-336"), sd, strict=False)
    assert report.unexpected == ["blocks.0.gamma_1"]
    assert any(r.levelno == logging.WARNING and "blocks.0.gamma_1" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ conversion
def test_conversion_carries_the_inner_norm_to_every_layout():
    """An EVA-CLIP release tower converted to timm / eva02 / det / seg still computes the tower."""
    name, preset, _, _ = TOWERS["B/16"]
    sd = eva_clip_release_checkpoint("B/16", depth=1)
    ours = build_backbone(preset, depth=1).eval()
    load_checkpoint(ours, sd)

    out, report = cc.convert(sd, "timm")
    assert report.kind == "EVA-CLIP" and report.model.startswith("custom (width 768, depth 1")
    assert torch.equal(out["blocks.0.attn.norm.bias"], sd["visual.blocks.0.attn.inner_attn_ln.bias"])
    tower = timm.create_model(name, pretrained=False, depth=1, num_classes=0).eval()
    result = tower.load_state_dict(out, strict=False)  # all but the final norm, which is not converted
    assert not result.unexpected_keys and set(result.missing_keys) == {"norm.weight", "norm.bias"}
    _assert_equals_tower(ours, tower, 224)

    # Ours against ours from here (any input size will do): every load overwrites every tensor.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ours.forward_tokens(x)
    back, report = cc.convert(out, "eva02")  # timm -> release names -> ours
    assert report.layout == "timm" and "blocks.0.attn.inner_attn_ln.weight" in back["model"]
    for converted in (back, cc.convert(sd, "seg")[0]):
        load_checkpoint(ours, converted)
        with torch.no_grad():
            assert torch.equal(ours.forward_tokens(x), expected)

    det, _ = cc.convert(sd, "det")
    assert "backbone.net.blocks.0.attn.inner_attn_ln.weight" in det["model"]
    net = build_backbone(preset, depth=1, use_cls_token=False).eval()
    load_checkpoint(net, sd)
    with torch.no_grad():
        expected = net.forward_tokens(x)
    load_checkpoint(net, det)
    with torch.no_grad():
        assert torch.equal(net.forward_tokens(x), expected)
