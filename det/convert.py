"""Checkpoint conversion to detectron2 (``--to det``): the backbone plus, from a detector, its heads."""

from __future__ import annotations

import re

import torch

from backbone.conversion import DET_PREFIX, Report, _shape, convert_backbone, finish_report

Tensor = torch.Tensor
# Class-specific detector tensors (detectron2 Cascade / Mask R-CNN names).
_CLS_SCORE = re.compile(r"^roi_heads\.box_predictor(\.\d+)?\.cls_score\.(weight|bias)$")
_BBOX_PRED = re.compile(r"^roi_heads\.box_predictor(\.\d+)?\.bbox_pred\.(weight|bias)$")
_MASK_PRED = re.compile(r"^roi_heads\.mask_head\.predictor\.(weight|bias)$")


def to_detectron2(
    raw: dict[str, Tensor],
    source: str = "<state dict>",
    num_classes: int | None = None,
    drop_class_heads: bool = False,
    patch_size: int | None = None,
    **options,
) -> tuple[dict, Report]:
    """A ``train.init_checkpoint``: ``{"model": {"backbone.net.<name>": ...}}``, with the neck and heads
    when the input is a detector (class-specific predictors re-initialised for ``num_classes`` or
    dropped)."""
    # The released dense-prediction models all use patch 16.
    conv = convert_backbone(raw, "det", source, patch_size=patch_size or 16, **options)
    if "cls_token" in conv.sd:
        conv.report.dropped["cls_token"] = _shape(conv.sd.pop("cls_token"))  # the detectors have none
    heads = {}
    if conv.prefix == DET_PREFIX:  # detector -> detector: keep neck, RPN and heads
        heads = _class_heads(conv.rest, num_classes, drop_class_heads, conv.report)
    report = finish_report(conv, heads)
    return {"model": {**{DET_PREFIX + k: v for k, v in conv.sd.items()}, **heads}}, report


def _class_heads(
    rest: dict[str, Tensor], num_classes: int | None, drop: bool, report: Report
) -> dict[str, Tensor]:
    """Objects365 -> COCO/LVIS: keep neck, RPN and box-head trunks; re-initialise or drop predictors."""
    scores = [v for k, v in rest.items() if _CLS_SCORE.match(k) and k.endswith("weight")]
    if not scores or (num_classes is None and not drop):
        return rest
    src = scores[0].shape[0] - 1
    if num_classes == src and not drop:
        return rest
    out = {}
    gen = torch.Generator().manual_seed(0)
    for key, value in rest.items():
        is_bbox = _BBOX_PRED.match(key) and value.shape[0] == 4 * src  # class-specific regression only
        if not (_CLS_SCORE.match(key) or is_bbox or _MASK_PRED.match(key)):
            out[key] = value
            continue
        if drop:
            report.dropped[key] = _shape(value)
            continue
        rows = num_classes + 1 if _CLS_SCORE.match(key) else num_classes * (4 if is_bbox else 1)
        new = value.new_zeros((rows, *value.shape[1:]))
        if key.endswith("weight"):  # detectron2's own initialisation of these layers
            std = 0.01 if _CLS_SCORE.match(key) else 0.001
            new.normal_(0.0, std, generator=gen)
        out[key] = new
        report.reinitialised[key] = (_shape(value), _shape(new))
    return out
