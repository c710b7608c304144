"""Grouped NMS as one exportable operator with an ONNX ``NonMaxSuppression`` translation.

detectron2 filters candidates with boolean masks (data-dependent shapes) before its
``batched_nms``. ``batched_nms`` here takes every candidate and a score threshold instead:
in eager mode it keeps the candidates scoring strictly above the threshold and calls detectron2's
``batched_nms`` on them (identical results); in an export it is one operator whose ONNX
translation is a single-class ``NonMaxSuppression`` over boxes shifted apart by group, the
coordinate trick of torchvision's ``batched_nms`` (offset ``group * (max coordinate + 1)``,
the maximum taken over the candidates, as torchvision takes it over the boxes it is given).
The output is sorted by decreasing score in both cases.

RoIAlign needs nothing here: detectron2's ``ROIAlign`` calls ``torchvision::roi_align``, which
the exporter translates to ONNX ``RoiAlign`` (``half_pixel`` for ``aligned=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor

_INT64_MAX = 0x7FFFFFFFFFFFFFFF


@torch.library.custom_op("eva02_deploy::batched_nms", mutates_args=())
def batched_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float, score_threshold: float
) -> Tensor:
    """Indices of the boxes kept by per-group NMS among those scoring above ``score_threshold``,
    by decreasing score: detectron2's ``batched_nms(boxes[c], scores[c], groups[c])`` mapped back
    to the indices of the inputs (``c``: the candidates)."""
    from detectron2.layers import batched_nms as d2_batched_nms

    candidates = torch.nonzero(scores > score_threshold).flatten()
    keep = d2_batched_nms(boxes[candidates], scores[candidates], groups[candidates], iou_threshold)
    return candidates[keep]


@batched_nms.register_fake
def _batched_nms_fake(boxes, scores, groups, iou_threshold, score_threshold):
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.int64)


def batched_nms_onnx(boxes, scores, groups, iou_threshold: float, score_threshold: float):
    """ONNX translation of :func:`batched_nms` (onnxscript, traced by the exporter)."""
    from onnxscript import FLOAT, INT64
    from onnxscript import opset18 as op

    threshold = op.Constant(value_float=score_threshold)
    candidate = op.Greater(scores, threshold)
    # the offset as torchvision computes it: from the largest coordinate among the candidates
    row_max = op.ReduceMax(boxes, op.Constant(value_ints=[1]), keepdims=0)
    lowest = op.Constant(value_float=float("-inf"))
    top = op.ReduceMax(op.Where(candidate, row_max, lowest), keepdims=0)
    offsets = op.Mul(op.Cast(groups, to=FLOAT.dtype), op.Add(top, op.Constant(value_float=1.0)))
    shifted = op.Add(boxes, op.Unsqueeze(offsets, op.Constant(value_ints=[1])))
    selected = op.NonMaxSuppression(
        op.Unsqueeze(shifted, op.Constant(value_ints=[0])),
        op.Unsqueeze(scores, op.Constant(value_ints=[0, 1])),
        op.Constant(value_ints=[_INT64_MAX]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]),
    )
    # (K, 3) rows of (batch, class, box index), in the order selected: by decreasing score
    index = op.Gather(selected, op.Constant(value_int=2), axis=1)
    return op.Cast(index, to=INT64.dtype)


def custom_translations() -> dict:
    """The exporter's ``custom_translation_table`` for the operators of this module."""
    return {torch.ops.eva02_deploy.batched_nms.default: batched_nms_onnx}
