"""Pre-training configuration and the released EVA-02 recipes as named presets."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class PretrainConfig:
    """Everything a pre-training run needs; CLI flags map 1:1 onto these fields.

    ``batch_size`` is per process (micro-batch); ``total_batch_size`` is the
    optimizer batch, reached with ``batch_size * world_size * accum_steps``.
    """

    data: str = ""
    output_dir: str = "output/pretrain"
    model: str = "eva02_base"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    patch_size: int = 14
    teacher: str = "eva01_clip_g14"
    teacher_ckpt: str = ""
    num_mask_patches: int | None = None  # None: 105/256 of the grid (105 at 224/14, as released)
    min_mask_patches_per_block: int = 16
    max_mask_patches_per_block: int | None = None
    mask_min_aspect: float = 0.3
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    epochs: int = 150
    max_steps: int | None = None  # cut the run (and the schedule) to this many optimizer steps
    stop_after: int | None = None  # leave after this step (checkpoint saved), e.g. before a job's time limit
    batch_size: int = 64
    total_batch_size: int | None = None
    lr: float = 1.5e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    clip_grad: float = 3.0
    drop_path: float = 0.0
    stop_grad_conv1: bool = True
    amp: str = "none"  # none | bf16 | fp16
    act_checkpoint: bool = False
    compile: bool = False
    seed: int = 0
    num_workers: int = 4
    save_every: int = 1000
    keep_every: int = 0  # also keep a step-numbered copy every N steps (0: only checkpoint-last)
    log_every: int = 10
    resume: str = ""  # a checkpoint path, or "auto" for <output_dir>/checkpoint-last.pth if present
    device: str = "auto"
    tensorboard: bool = True
    progress: bool = True

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}


_COMMON: dict[str, Any] = dict(
    img_size=224, patch_size=14, teacher="eva01_clip_g14", num_mask_patches=105, min_mask_patches_per_block=16
)

# The released recipes (EVA-02/asuka README): IN-21K, 224 px, patch 14, 105 masked patches,
# AdamW(0.9, 0.98, eps 1e-6, wd 0.05), 1 warm-up epoch, clip 3.0, EVA-01-CLIP g/14 teacher.
RECIPES: dict[str, dict[str, Any]] = {
    "eva02_tiny_in21k": dict(_COMMON, model="eva02_tiny", epochs=240, lr=3e-3, total_batch_size=4000),
    "eva02_small_in21k": dict(_COMMON, model="eva02_small", epochs=240, lr=3e-3, total_batch_size=4000),
    "eva02_base_in21k": dict(_COMMON, model="eva02_base", epochs=150, lr=1.5e-3, total_batch_size=2048),
    "eva02_large_in21k": dict(
        _COMMON, model="eva02_large", epochs=150, lr=1.5e-3, total_batch_size=2048, drop_path=0.1
    ),
    "eva02_large_m38m": dict(
        _COMMON, model="eva02_large", epochs=56, lr=1.5e-3, total_batch_size=2048, drop_path=0.1
    ),
    # CPU-sized chain for the demo and quick checks (tiny teacher, small crops).
    "toy": dict(
        model="eva02_tiny",
        img_size=112,
        patch_size=14,
        teacher="tiny",
        epochs=30,
        lr=1.5e-3,
        min_lr=1e-4,
        batch_size=8,
        total_batch_size=8,
        warmup_steps=5,
        num_workers=0,
        save_every=20,
        log_every=5,
    ),
}


def recipe_config(name: str | None, **overrides: Any) -> PretrainConfig:
    """A :class:`PretrainConfig` from recipe ``name`` (or defaults), then ``overrides``."""
    base: dict[str, Any] = {}
    if name:
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
        base = dict(RECIPES[name])
    unknown = set(overrides) - PretrainConfig.field_names()
    if unknown:
        raise ValueError(f"unknown pre-training options {sorted(unknown)}")
    cfg = PretrainConfig(**{**base, **overrides})
    check_ranges(cfg)
    return cfg


# Counts that must be at least 1 (or, second list, at least 0), and rates that must be finite and > 0:
# a zero batch would otherwise end in a ZeroDivisionError deep inside the schedule.
_AT_LEAST_ONE = ("img_size", "patch_size", "epochs", "batch_size", "save_every", "log_every",
                 "min_mask_patches_per_block")  # fmt: skip
_OPTIONAL_AT_LEAST_ONE = ("num_mask_patches", "max_mask_patches_per_block", "max_steps", "stop_after",
                          "total_batch_size")  # fmt: skip
_AT_LEAST_ZERO = ("num_workers", "keep_every", "seed", "warmup_steps")
_POSITIVE_RATES = ("lr", "eps")
_NON_NEGATIVE_RATES = ("min_lr", "warmup_epochs", "weight_decay", "clip_grad", "drop_path")


def check_ranges(cfg: PretrainConfig) -> None:
    """One ``ValueError`` naming the first option outside its range (as its command-line flag)."""
    import math

    def fail(name: str, want: str) -> None:
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{flag} {getattr(cfg, name)!r}: must be {want}")

    for name in _AT_LEAST_ONE + _OPTIONAL_AT_LEAST_ONE:
        value = getattr(cfg, name)
        if not (value is None and name in _OPTIONAL_AT_LEAST_ONE) and (
            not isinstance(value, int) or value < 1
        ):
            fail(name, "an integer >= 1")
    for name in _AT_LEAST_ZERO:
        value = getattr(cfg, name)
        if not (value is None and name == "warmup_steps") and (not isinstance(value, int) or value < 0):
            fail(name, "an integer >= 0")
    for name in _POSITIVE_RATES + _NON_NEGATIVE_RATES:
        value = getattr(cfg, name)
        low_ok = value > 0 if name in _POSITIVE_RATES else value >= 0
        if not (isinstance(value, (int, float)) and math.isfinite(value) and low_ok):
            fail(name, "a finite number " + ("> 0" if name in _POSITIVE_RATES else ">= 0"))
    if cfg.drop_path >= 1:
        fail("drop_path", "below 1")
