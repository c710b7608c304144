"""Soft-NMS and maskness re-scoring on hand-made examples."""

import math

import pytest
import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_iou

from det.maskness import maskness, rescore_with_maskness
from det.soft_nms import batched_soft_nms, soft_nms_inference_single_image

BOXES = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 5, 10, 15]], dtype=torch.float32)
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])


def _iou(i, j):
    return float(box_iou(BOXES[i : i + 1], BOXES[j : j + 1]))


def test_linear_soft_nms_by_hand():
    labels = torch.zeros(4, dtype=torch.long)
    scores, keep = batched_soft_nms(BOXES, SCORES, labels, method="linear", iou_threshold=0.3)
    # A (0.9) first: B overlaps it by IoU 0.82 -> 0.8 * (1 - 0.82); D by exactly 1/3 > 0.3 -> 0.6 * 2/3.
    # C (0.7) overlaps nothing; then D (0.4) overlaps B by 0.29 < 0.3, so B keeps its decayed score.
    assert keep.tolist() == [0, 2, 3, 1]
    expected = [0.9, 0.7, 0.6 * (1 - _iou(0, 3)), 0.8 * (1 - _iou(0, 1))]
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)
    assert _iou(3, 1) < 0.3 < _iou(0, 3)


def test_gaussian_soft_nms_by_hand():
    labels = torch.zeros(4, dtype=torch.long)
    scores, keep = batched_soft_nms(BOXES, SCORES, labels, method="gaussian", sigma=0.5)
    g = lambda iou: math.exp(-(iou**2) / 0.5)  # noqa: E731
    b = 0.8 * g(_iou(0, 1))
    d = 0.6 * g(_iou(0, 3))
    assert d > b
    b = b * g(_iou(3, 1))  # D is picked before B and decays it once more
    assert keep.tolist() == [0, 2, 3, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.7, d, b], abs=1e-6)


def test_class_wise_soft_nms_keeps_other_classes():
    labels = torch.tensor([0, 1, 0, 0])
    scores, keep = batched_soft_nms(
        BOXES, SCORES, labels, method="linear", iou_threshold=0.3, class_wise=True
    )
    by_index = dict(zip(keep.tolist(), scores.tolist()))
    assert by_index[1] == pytest.approx(0.8)  # B is another class: untouched by A
    assert by_index[3] == pytest.approx(0.6 * (1 - _iou(0, 3)))
    _, keep_all = batched_soft_nms(
        BOXES, SCORES, labels, method="linear", iou_threshold=0.3, class_wise=False
    )
    assert keep_all.tolist() == [0, 2, 3, 1]


def test_soft_nms_inference_single_image():
    # 4 proposals, 2 classes (+ background), class-agnostic boxes.
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.02, 0.7, 0.28], [0.6, 0.01, 0.39]])
    inst, src = soft_nms_inference_single_image(
        BOXES.clone(),
        probs,
        (40, 40),
        0.05,
        100,
        method="linear",
        iou_threshold=0.3,
        sigma=0.5,
        class_wise=True,
    )
    # Candidates above 0.05: (0,c0) (1,c0) (1,c1) (2,c1) (3,c0); box 1 as class 1 overlaps nothing of class 1.
    assert src.tolist() == [0, 2, 3, 1, 1]
    assert inst.pred_classes.tolist() == [0, 1, 0, 0, 1]
    expected = [0.9, 0.7, 0.6 * (1 - _iou(0, 3)), 0.8 * (1 - _iou(0, 1)), 0.1]
    assert inst.scores.tolist() == pytest.approx(expected, abs=1e-6)
    top2, _ = soft_nms_inference_single_image(
        BOXES.clone(),
        probs,
        (40, 40),
        0.05,
        2,
        method="linear",
        iou_threshold=0.3,
        sigma=0.5,
        class_wise=True,
    )
    assert len(top2) == 2


def test_maskness_by_hand():
    probs = torch.tensor([[[0.9, 0.6], [0.2, 0.4]], [[0.1, 0.2], [0.3, 0.4]], [[1.0, 1.0], [0.5, 0.8]]])
    assert maskness(probs[:, None], 0.5).tolist() == pytest.approx([0.75, 0.0, (1 + 1 + 0.8) / 3])


def test_rescore_with_maskness_resorts():
    inst = Instances((8, 8))
    inst.pred_boxes = Boxes(torch.zeros(3, 4))
    inst.scores = torch.tensor([0.9, 0.8, 0.5])
    inst.pred_classes = torch.tensor([0, 1, 2])
    inst.pred_masks = torch.stack(
        [torch.full((1, 2, 2), 0.55), torch.full((1, 2, 2), 0.95), torch.full((1, 2, 2), 0.3)]
    )
    out = rescore_with_maskness(inst, 0.5)
    assert out.pred_classes.tolist() == [1, 0, 2]
    assert out.scores.tolist() == pytest.approx([0.8 * 0.95, 0.9 * 0.55, 0.0])


def test_bad_method_rejected():
    with pytest.raises(ValueError, match="soft-NMS method"):
        batched_soft_nms(BOXES, SCORES, torch.zeros(4, dtype=torch.long), method="cubic")
