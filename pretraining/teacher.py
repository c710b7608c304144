"""Frozen EVA-CLIP vision towers (built with timm's ``Eva``) that give the pre-training targets.

The target of a patch is the teacher's final-LayerNorm token projected by the
CLIP head (the image-text embedding projection), as in the EVA-02 release.
The teacher sees the same crop as the student, at ``grid * teacher_patch`` pixels
so that both produce one feature per student patch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from backbone.checkpoint import CheckpointError, read_state_dict


@dataclass(frozen=True)
class TeacherSpec:
    arch: str  # timm model name
    patch_size: int
    width: int
    released_as: str


TEACHERS: dict[str, TeacherSpec] = {
    # The teacher of every released EVA-02 model (EVA_CLIP_g_14_X, file eva_clip_psz14.pt).
    "eva01_clip_g14": TeacherSpec(
        "eva_giant_patch14_clip_224", 14, 1408, "EVA-01-CLIP g/14 (eva_clip_psz14.pt)"
    ),
    "eva02_clip_b16": TeacherSpec(
        "eva02_base_patch16_clip_224", 16, 768, "EVA-02-CLIP B/16 (EVA02_CLIP_B_psz16_s8B.pt)"
    ),
    "eva02_clip_l14": TeacherSpec(
        "eva02_large_patch14_clip_224", 14, 1024, "EVA-02-CLIP L/14 (EVA02_CLIP_L_psz14_s4B.pt)"
    ),
    "eva02_clip_l14_336": TeacherSpec(
        "eva02_large_patch14_clip_336", 14, 1024, "EVA-02-CLIP L/14@336 (EVA02_CLIP_L_336_psz14_s6B.pt)"
    ),
    "eva02_clip_e14": TeacherSpec(
        "eva02_enormous_patch14_clip_224",
        14,
        1792,
        "EVA-02-CLIP E/14 (EVA02_CLIP_E_psz14_s4B.pt, _plus_s9B.pt)",
    ),
    # Small random EVA-02-style tower for tests and the demo (deterministic from its seed).
    "tiny": TeacherSpec("tiny", 14, 64, "none (seeded random init, or a file written by save_teacher)"),
}

TINY_TEACHER_DIM = 32


class TeacherError(ValueError):
    """A teacher cannot be built or its checkpoint does not fit."""


class CLIPTeacher(nn.Module):
    """Frozen timm ``Eva`` returning ``(B, N, D)`` projected final-LN patch tokens."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.patch_size = int(model.patch_embed.patch_size[0])
        head = model.head
        self.out_dim = head.out_features if isinstance(head, nn.Linear) else int(model.embed_dim)

    def train(self, mode: bool = True) -> CLIPTeacher:
        return super().train(False)  # always frozen: no drop path, no dropout

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(images)[:, self.model.num_prefix_tokens :]
        return self.model.head(tokens)


def _head_rows(sd: dict[str, torch.Tensor]) -> int:
    for key in ("visual.head.weight", "head.weight", "visual.head.proj.weight"):
        if key in sd:
            return int(sd[key].shape[0])
    return 0


def _read(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as err:  # safetensors raises its own error types
            raise TeacherError(f"{path}: not a readable safetensors file: {err}") from None
    try:
        return read_state_dict(path)
    except CheckpointError as err:
        raise TeacherError(str(err)) from None


def build_tiny_eva(img_size: int, patch_size: int = 14, out_dim: int = TINY_TEACHER_DIM) -> nn.Module:
    from timm.models.eva import Eva

    grid = img_size // patch_size
    return Eva(
        img_size=img_size,
        patch_size=patch_size,
        num_classes=out_dim,
        global_pool="token",
        embed_dim=TEACHERS["tiny"].width,
        depth=2,
        num_heads=2,
        qkv_fused=False,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        scale_mlp=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(grid, grid),
    )


def build_teacher(
    name: str, grid: tuple[int, int], checkpoint: str | None = None, seed: int = 0, **arch_overrides: Any
) -> CLIPTeacher:
    """Build teacher ``name`` (see :data:`TEACHERS`) for a student patch ``grid``.

    Weights come from ``checkpoint``: an original EVA-CLIP file (``visual.`` tower; the
    text tower is ignored), a timm ``Eva`` state dict or an OpenCLIP-timm file
    (``visual.trunk.``), as ``.pt``/``.pth``/``.bin``/``.safetensors``. ``arch_overrides`` go to
    ``timm.create_model`` (e.g. ``depth`` for a truncated tower).
    """
    if name not in TEACHERS:
        raise TeacherError(f"unknown teacher {name!r}; choose one of {sorted(TEACHERS)}")
    spec = TEACHERS[name]
    if grid[0] != grid[1]:
        raise TeacherError(f"teachers need a square patch grid, got {grid}")
    img_size = grid[0] * spec.patch_size
    if name == "tiny":
        return _build_tiny(img_size, checkpoint, seed)
    if not checkpoint:
        raise TeacherError(
            f"teacher {name!r} needs its weights: pass --teacher-ckpt with the local file of "
            f"{spec.released_as}"
        )
    if not os.path.isfile(checkpoint):
        raise TeacherError(f"{checkpoint}: teacher checkpoint not found")
    import timm
    from timm.models.eva import checkpoint_filter_fn

    sd = _read(checkpoint)
    if "visual.trunk.pos_embed" in sd and "visual.head.proj.weight" in sd:
        sd["visual.trunk.head.weight"] = sd[
            "visual.head.proj.weight"
        ]  # OpenCLIP keeps the projection outside
    out_dim = _head_rows(sd)
    model = timm.create_model(
        spec.arch, pretrained=False, img_size=img_size, num_classes=out_dim, **arch_overrides
    )
    try:
        filtered = checkpoint_filter_fn(sd, model)
    except Exception as err:  # timm's resizers raise assorted errors on foreign tensors
        raise TeacherError(
            f"{checkpoint}: cannot adapt to {spec.arch}: {type(err).__name__}: {err}"
        ) from None
    if isinstance(model.head, nn.Linear) and "head.bias" not in filtered and "head.weight" in filtered:
        filtered["head.bias"] = torch.zeros(out_dim)  # bias-free CLIP projection
    _load_strict(model, filtered, checkpoint, f"teacher {name!r} ({spec.arch})")
    return CLIPTeacher(model.float(), name)


def _load_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: str, what: str) -> None:
    expected = model.state_dict()
    mismatched = [
        f"{k}: file {list(v.shape)} vs model {list(expected[k].shape)}"
        for k, v in sd.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if mismatched:
        raise TeacherError(f"{path}: does not fit {what}; shape mismatches: {mismatched[:4]}")
    result = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    missing = list(result.missing_keys)
    if missing or result.unexpected_keys:
        raise TeacherError(
            f"{path}: does not fit {what}: {len(missing)} missing keys (e.g. {missing[:4]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {list(result.unexpected_keys)[:4]})"
        )


def _build_tiny(img_size: int, checkpoint: str | None, seed: int) -> CLIPTeacher:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_tiny_eva(img_size)
    if checkpoint:
        sd = _read(checkpoint)
        out_dim = _head_rows(sd)
        if out_dim != TINY_TEACHER_DIM:
            model = build_tiny_eva(img_size, out_dim=out_dim)
        from timm.models.eva import checkpoint_filter_fn

        _load_strict(model, checkpoint_filter_fn(sd, model), checkpoint, "the tiny teacher")
    return CLIPTeacher(model, "tiny")


def save_teacher(teacher: CLIPTeacher, path: str) -> None:
    """Write a teacher's timm state dict (used to hand the demo's tiny teacher around as a file)."""
    from backbone.io import atomic_save

    atomic_save(teacher.model.state_dict(), path)
