"""Named EVA-02 model sizes and the ``build_backbone`` factory."""

from __future__ import annotations

from typing import Any

from .vit import EVA02ViT

# Architecture of each preset. Tiny/small were released without sub-LN (packed SwiGLU),
# base/large with it. The EVA-02-CLIP vision towers are base/large with a LayerNorm inside
# attention (EVA-CLIP ``inner_attn_ln``, timm ``scale_attn_inner``); everything else is shared.
PRESETS: dict[str, dict[str, Any]] = {
    "eva02_tiny": dict(embed_dim=192, depth=12, num_heads=3, sub_ln=False),
    "eva02_small": dict(embed_dim=384, depth=12, num_heads=6, sub_ln=False),
    "eva02_base": dict(embed_dim=768, depth=12, num_heads=12, sub_ln=True),
    "eva02_large": dict(embed_dim=1024, depth=24, num_heads=16, sub_ln=True),
    "eva02_base_clip": dict(embed_dim=768, depth=12, num_heads=12, sub_ln=True, inner_attn_norm=True),
    "eva02_large_clip": dict(embed_dim=1024, depth=24, num_heads=16, sub_ln=True, inner_attn_norm=True),
}

# Native input geometry where it differs from the 224 px / patch 14 default: EVA-02-CLIP-B
# is a patch-16 model (14 x 14 tokens; RoPE still measured on the 16 x 16 grid). Applied by
# ``build_backbone`` only; callers with their own geometry (detection, segmentation) use PRESETS.
PRESET_GEOMETRY: dict[str, dict[str, Any]] = {
    "eva02_base_clip": dict(patch_size=16),
}


def build_backbone(name: str, **overrides: Any) -> EVA02ViT:
    """Build a preset with keyword overrides of :class:`EVA02ViT`.

    Presets: ``eva02_tiny|small|base|large`` (MIM-pre-trained EVA-02) and
    ``eva02_base_clip|large_clip`` (EVA-02-CLIP vision towers). The default
    geometry is the pre-training one: 224 px, patch 14 (16 for
    ``eva02_base_clip``), cls token, global attention in every block. For
    the 336 px EVA-02-CLIP-L tower pass ``img_size=336``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(PRESETS)}")
    return EVA02ViT(**{**PRESETS[name], **PRESET_GEOMETRY.get(name, {}), **overrides})


def infer_preset(embed_dim: int, depth: int, inner_attn_norm: bool = False) -> str | None:
    """Name of the preset with this width, depth and inner attention norm, if any."""
    for name, cfg in PRESETS.items():
        same_inner = cfg.get("inner_attn_norm", False) == inner_attn_norm
        if cfg["embed_dim"] == embed_dim and cfg["depth"] == depth and same_inner:
            return name
    return None
