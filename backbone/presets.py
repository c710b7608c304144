"""Named EVA-02 model sizes and the ``build_backbone`` factory."""

from __future__ import annotations

from typing import Any

from .vit import EVA02ViT

# Tiny/small were released without sub-LN (packed SwiGLU), base/large with it.
PRESETS: dict[str, dict[str, Any]] = {
    "eva02_tiny": dict(embed_dim=192, depth=12, num_heads=3, sub_ln=False),
    "eva02_small": dict(embed_dim=384, depth=12, num_heads=6, sub_ln=False),
    "eva02_base": dict(embed_dim=768, depth=12, num_heads=12, sub_ln=True),
    "eva02_large": dict(embed_dim=1024, depth=24, num_heads=16, sub_ln=True),
}


def eva02_tiny(**overrides: Any) -> EVA02ViT:
    return EVA02ViT(**{**PRESETS["eva02_tiny"], **overrides})


def eva02_small(**overrides: Any) -> EVA02ViT:
    return EVA02ViT(**{**PRESETS["eva02_small"], **overrides})


def eva02_base(**overrides: Any) -> EVA02ViT:
    return EVA02ViT(**{**PRESETS["eva02_base"], **overrides})


def eva02_large(**overrides: Any) -> EVA02ViT:
    return EVA02ViT(**{**PRESETS["eva02_large"], **overrides})


def build_backbone(name: str, **overrides: Any) -> EVA02ViT:
    """Build a preset (``eva02_tiny|small|base|large``) with keyword overrides of :class:`EVA02ViT`.

    The default geometry is the pre-training one: 224 px, patch 14, cls token,
    global attention in every block.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(PRESETS)}")
    return EVA02ViT(**{**PRESETS[name], **overrides})


def infer_preset(embed_dim: int, depth: int) -> str | None:
    """Name of the preset with this width and depth, if any."""
    for name, cfg in PRESETS.items():
        if cfg["embed_dim"] == embed_dim and cfg["depth"] == depth:
            return name
    return None
