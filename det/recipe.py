"""The few knobs in which the released EVA-02 detection rows differ, as small config helpers.

Each released config sets the ViT size and geometry, the layer-decayed AdamW, the schedule and, for
the system-level rows, the soft-NMS evaluation. These helpers set exactly those fields on a loaded
lazy config (``model``, ``optimizer``, ``train``, ``lr_multiplier``), so a row reads as one call per
concern with the released values as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from omegaconf import DictConfig

from .lr_decay import eva02_lr_factor

VIT_SIZES = {
    "B": dict(embed_dim=768, depth=12, num_heads=12),
    "L": dict(embed_dim=1024, depth=24, num_heads=16),
}


def set_eva02_vit(
    model: DictConfig,
    optimizer: DictConfig,
    size: str,
    *,
    img_size: int,
    window_size: int,
    global_blocks: Sequence[int],
    drop_path_rate: float,
    lr: float,
    lr_decay_rate: float,
    use_act_checkpoint: bool = False,
) -> None:
    """EVA-02 B or L at ``img_size`` (patch 16, SwiGLU 4*2/3) with global attention in
    ``global_blocks`` and windows elsewhere; AdamW at ``lr`` with layer decay ``lr_decay_rate``.

    Every image is padded to the ``img_size`` square (``model.backbone.square_pad``), in training
    and at test, as in every released row: the padded tokens take part in attention, so features
    of non-square images depend on it. ``model.backbone.square_pad=0`` pads only to a multiple of
    the pyramid stride instead.
    """
    if size not in VIT_SIZES:
        raise ValueError(f"unknown EVA-02 size {size!r}; expected one of {sorted(VIT_SIZES)}")
    net = model.backbone.net
    for key, value in VIT_SIZES[size].items():
        setattr(net, key, value)
    depth = VIT_SIZES[size]["depth"]
    bad = [i for i in global_blocks if not 0 <= i < depth]
    if bad:
        raise ValueError(f"global blocks {bad} out of range for EVA-02 {size} (depth {depth})")
    net.img_size = img_size
    model.backbone.square_pad = img_size
    net.patch_size = 16
    net.mlp_ratio = 4 * 2 / 3
    net.window_size = window_size
    net.window_block_indexes = [i for i in range(depth) if i not in set(global_blocks)]
    net.drop_path_rate = drop_path_rate
    net.use_act_checkpoint = use_act_checkpoint
    optimizer.lr = lr
    optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=lr_decay_rate, num_layers=depth)
    optimizer.params.overrides = {}
    optimizer.params.weight_decay_norm = None


def set_multistep_schedule(
    train: DictConfig, lr_multiplier: DictConfig, max_iter: int, warmup_iters: int = 1000
) -> None:
    """``max_iter`` iterations, lr x0.1 at 80% and 90%, linear warm-up over ``warmup_iters``."""
    train.max_iter = max_iter
    lr_multiplier.scheduler.milestones = [max_iter * 8 // 10, max_iter * 9 // 10]
    lr_multiplier.scheduler.num_updates = max_iter
    lr_multiplier.warmup_length = warmup_iters / max_iter


def use_released_soft_nms(model: DictConfig, score_thresh: float | None = 0.0) -> None:
    """The released system-level evaluation: class-wise linear soft-NMS at IoU 0.6 and, for COCO,
    score threshold 0 (``None`` keeps the predictors' own threshold, e.g. LVIS's 0.02).

    As released, soft-NMS keeps every detection whose decayed score stays above 1e-3: no
    per-image top-k (``test_topk_per_image`` stays ``None``). Maskness, when set, re-scores all of
    them and the evaluator applies its own cap (COCOeval ``maxDets``, LVIS 300 or 1000).
    """
    heads = model.roi_heads
    heads.use_soft_nms = True
    heads.class_wise = True
    heads.method = "linear"
    heads.iou_threshold = 0.6
    heads.override_score_thresh = score_thresh
    heads.test_topk_per_image = None
