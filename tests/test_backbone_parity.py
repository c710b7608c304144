"""Numerical parity of the backbone with timm's Eva on the same (random) weights."""

import functools

import pytest
import timm
import torch

from backbone import build_backbone, from_internal, load_checkpoint

PRESETS = ["eva02_tiny", "eva02_small", "eva02_base", "eva02_large"]
# timm's parameter counts without classifier and without its fc_norm (a classification-head norm).
TIMM_PARAMS = {
    "eva02_tiny": 5_501_760,
    "eva02_small": 21_620_352,
    "eva02_base": 85_757_184,
    "eva02_large": 303_266_752,
}


def _timm_model(name: str, **kwargs) -> torch.nn.Module:
    model = timm.create_model(f"{name}_patch14_224", pretrained=False, num_classes=0, **kwargs).eval()
    with torch.no_grad():  # perturb every tensor so that biases and norms matter too
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@functools.cache
def _reference(name: str) -> torch.nn.Module:
    """timm model with dynamic_img_size (equal to the static one at 224), built once per preset."""
    torch.manual_seed(0)
    return _timm_model(name, dynamic_img_size=True)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / a.norm()).item()


@pytest.mark.parametrize("name", PRESETS)
def test_parameter_count_matches_timm(name):
    ours = sum(p.numel() for p in build_backbone(name).parameters())
    assert ours == TIMM_PARAMS[name]
    ref = _reference(name)
    body = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("fc_norm."))
    assert ours == body


@pytest.mark.parametrize("name", PRESETS)
def test_forward_tokens_equals_timm(name):
    ref = _reference(name)
    ours = build_backbone(name).eval()
    report = load_checkpoint(ours, ref.state_dict())
    assert report.layout == "timm" and not report.missing and not report.unexpected
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_features(x)
        got = ours.forward_tokens(x)
    assert got.shape == expected.shape == (1, 257, ours.embed_dim)
    assert _rel_err(expected, got) < 1e-4


@pytest.mark.parametrize(
    "name,size",
    [
        ("eva02_tiny", (336, 252)),
        ("eva02_small", (280, 280)),
        ("eva02_base", (168, 308)),
        ("eva02_large", (168, 168)),
    ],
)
def test_other_resolution_equals_timm_dynamic(name, size):
    """Position embedding and RoPE interpolation: timm's dynamic_img_size stretches positions."""
    ref = _reference(name)
    ours = build_backbone(name, position_rule="stretch", pos_embed_antialias=True).eval()
    load_checkpoint(ours, ref.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected, got = ref.forward_features(x), ours.forward_tokens(x)
    assert got.shape == expected.shape
    assert _rel_err(expected, got) < 1e-4


def test_stretch_needs_antialias_to_equal_timm_dynamic():
    """timm resamples the position embedding with antialias=True, whose bicubic filter is not the
    plain one even when enlarging: 18 x 24 tokens from the 16 x 16 grid differ without it."""
    ref = _reference("eva02_tiny")
    x = torch.randn(1, 3, 252, 336)
    with torch.no_grad():
        expected = ref.forward_features(x)
        errors = {}
        for antialias in (False, True):
            ours = build_backbone("eva02_tiny", position_rule="stretch", pos_embed_antialias=antialias).eval()
            load_checkpoint(ours, ref.state_dict())
            errors[antialias] = _rel_err(expected, ours.forward_tokens(x))
    assert errors[True] < 1e-6 < 1e-3 < errors[False]


def test_configured_resolution_equals_timm():
    """At a configured img_size other than 224 both keep the 16x16 reference grid for RoPE."""
    ref = _timm_model("eva02_tiny", img_size=336)
    ours = build_backbone("eva02_tiny", img_size=336).eval()
    load_checkpoint(ours, ref.state_dict())
    x = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        assert _rel_err(ref.forward_features(x), ours.forward_tokens(x)) < 1e-4


@pytest.mark.parametrize("name", ["eva02_tiny", "eva02_base"])
def test_export_to_timm_loads_strictly(name):
    ref = _reference(name)
    ours = build_backbone(name).eval()
    load_checkpoint(ours, ref.state_dict())
    exported = from_internal(ours.state_dict(), "timm")
    fresh = timm.create_model(f"{name}_patch14_224", pretrained=False, num_classes=0, dynamic_img_size=True)
    fresh.eval()
    missing, unexpected = fresh.load_state_dict(exported, strict=False)
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias"} and not unexpected
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(fresh.forward_features(x), ref.forward_features(x))
