"""Soft-NMS post-processing for the Fast R-CNN heads (mmcv's ``soft_nms`` kernel)."""

from __future__ import annotations

import torch
from detectron2.structures import Boxes, Instances

METHODS = ("linear", "gaussian", "naive")


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: str = "linear",
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    class_wise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS over (N, 4) xyxy ``boxes``; returns (decayed scores, kept indices), best first.

    ``linear``: a box overlapping a higher-scored one by IoU > ``iou_threshold`` is scaled by
    ``1 - IoU``; ``gaussian``: every box is scaled by ``exp(-IoU^2 / sigma)``; boxes falling
    below ``min_score`` are dropped. ``class_wise`` only lets boxes of the same label interact
    (boxes of different labels are shifted apart, as in torchvision's batched NMS).
    """
    if method not in METHODS:
        raise ValueError(f"soft-NMS method must be one of {METHODS}, got {method!r}")
    if boxes.numel() == 0:
        return scores.new_zeros(0), torch.zeros(0, dtype=torch.long, device=boxes.device)
    try:
        from mmcv.ops import soft_nms
    except ImportError as e:  # pragma: no cover - environment problem, not a code path
        raise ImportError("soft-NMS needs mmcv with compiled ops (mmcv.ops.soft_nms)") from e
    work = boxes.detach().float().cpu()
    if class_wise:
        # Shift each label's boxes into its own disjoint region so labels never overlap.
        work = work + (labels.cpu().to(work) * (work.max() + 1))[:, None]
    dets, keep = soft_nms(
        work,
        scores.detach().float().cpu(),
        iou_threshold=iou_threshold,
        sigma=sigma,
        min_score=min_score,
        method=method,
    )
    return dets[:, -1].to(device=scores.device, dtype=scores.dtype), keep.to(boxes.device).long()


def soft_nms_inference_single_image(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    image_shape: tuple[int, int],
    score_thresh: float,
    topk_per_image: int,
    *,
    method: str,
    iou_threshold: float,
    sigma: float,
    class_wise: bool,
) -> tuple[Instances, torch.Tensor]:
    """Like detectron2's ``fast_rcnn_inference_single_image`` with soft-NMS instead of NMS.

    ``boxes``: (R, 4 * num_reg_classes), ``scores``: (R, K + 1) with background last.
    Returns the Instances and the index of the source proposal of each detection.
    """
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not valid.all():
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]
    num_reg = boxes.shape[1] // 4
    boxes = Boxes(boxes.reshape(-1, 4))
    boxes.clip(image_shape)
    boxes = boxes.tensor.view(-1, num_reg, 4)
    mask = scores > score_thresh
    inds = mask.nonzero()
    boxes = boxes[inds[:, 0], 0] if num_reg == 1 else boxes[mask]
    scores = scores[mask]
    new_scores, keep = batched_soft_nms(
        boxes,
        scores,
        inds[:, 1],
        method=method,
        iou_threshold=iou_threshold,
        sigma=sigma,
        class_wise=class_wise,
    )
    if topk_per_image >= 0:
        new_scores, keep = new_scores[:topk_per_image], keep[:topk_per_image]
    result = Instances(image_shape)
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = new_scores
    result.pred_classes = inds[keep, 1]
    return result, inds[keep, 0]
