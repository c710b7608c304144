"""Soft-NMS and maskness re-scoring on hand-made examples."""

import math
from pathlib import Path

import pytest
import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_iou

from det.maskness import maskness, rescore_with_maskness
from det.soft_nms import batched_soft_nms, soft_nms_inference_single_image

ROOT = Path(__file__).resolve().parents[1]
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


# ---------------------------------------------------------------- the soft-NMS rows end to end
GRID = 6  # a 6 x 6 grid of 12 px boxes, 16 px apart: 36 objects
PAIRS = 8  # the first 8 also get a partner shifted by 1 px (IoU 132 / 156 with it)
BOX_BIAS = [2.0, 1.5, 0.5, 0.0, -0.5]  # class logits (background logit 0) of every proposal
MASK_BIAS = [0.2, 4.0, 1.0, -1.0, 2.0]  # mask logit of every pixel, per class


def _crowded_heads(maskness_thresh):
    """The toy detector's cascade heads with fixed outputs: every proposal scores softmax(BOX_BIAS)
    in every stage, regresses to itself, and predicts a uniform mask of sigmoid(MASK_BIAS)."""
    from detectron2.config import LazyConfig, instantiate

    from det.recipe import use_released_soft_nms

    cfg = LazyConfig.load(str(ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"))
    use_released_soft_nms(cfg.model, score_thresh=0.0)
    cfg.model.roi_heads.maskness_thresh = maskness_thresh
    heads = instantiate(cfg.model.roi_heads).eval()
    with torch.no_grad():
        for predictor in heads.box_predictor:
            predictor.cls_score.weight.zero_()
            predictor.cls_score.bias.copy_(torch.tensor([*BOX_BIAS, 0.0]))
            predictor.bbox_pred.weight.zero_()
            predictor.bbox_pred.bias.zero_()
        heads.mask_head.predictor.weight.zero_()
        heads.mask_head.predictor.bias.copy_(torch.tensor(MASK_BIAS))
    return heads


def _crowded_inputs():
    xy = torch.stack(torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij"), -1).reshape(-1, 2)
    grid = torch.cat([xy * 16 + 2, xy * 16 + 14], 1).float()
    partners = grid[:PAIRS] + torch.tensor([1.0, 0.0, 1.0, 0.0])
    proposals = Instances((192, 192))
    proposals.proposal_boxes = Boxes(torch.cat([grid, partners]))
    proposals.objectness_logits = torch.zeros(len(proposals.proposal_boxes))
    features = {f"p{i}": torch.randn(1, 64, 192 >> i, 192 >> i) for i in (2, 3, 4, 5)}
    return features, [proposals]


def _expected(with_maskness: bool) -> list[tuple[int, float]]:
    """(class, score) of every detection, by hand: no box overlaps another of the grid, each
    partner loses (1 - IoU) of its score to its twin, maskness is the uniform mask value when it
    is above 0.5 (else 0)."""
    exp = [math.exp(b) for b in BOX_BIAS]
    probs = [e / (sum(exp) + 1.0) for e in exp]  # background logit 0 -> exp 1
    iou = (11 * 12) / (2 * 144 - 11 * 12)
    sigmoid = [1 / (1 + math.exp(-b)) for b in MASK_BIAS]
    mask_score = [s if s > 0.5 else 0.0 for s in sigmoid]
    out = []
    for c, p in enumerate(probs):
        m = mask_score[c] if with_maskness else 1.0
        out += [(c, p * m)] * (GRID * GRID) + [(c, p * (1 - iou) * m)] * PAIRS
    return sorted(out, key=lambda cs: -cs[1])


@pytest.mark.parametrize("maskness_thresh", [None, 0.5])
def test_soft_nms_row_keeps_every_detection_and_maskness_reorders(maskness_thresh):
    heads = _crowded_heads(maskness_thresh)
    assert heads.box_predictor[-1].test_topk_per_image == 100  # the cap that soft-NMS rows do not apply
    features, proposals = _crowded_inputs()
    with torch.no_grad():
        (inst,), _ = heads(None, features, proposals)
    expected = _expected(with_maskness=maskness_thresh is not None)
    assert len(inst) == len(expected) == 5 * (GRID * GRID + PAIRS) > 100
    assert inst.scores.tolist() == pytest.approx([s for _, s in expected], abs=1e-6)
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    # Without maskness class 0 (box score 0.46) leads; maskness 0.55 vs 0.98 puts class 1 first.
    leader = 0 if maskness_thresh is None else 1
    assert inst.pred_classes[: GRID * GRID].tolist() == [leader] * (GRID * GRID)
    assert [c for c, _ in expected[: GRID * GRID]] == [leader] * (GRID * GRID)
    if maskness_thresh is not None:  # class 3's masks are below 0.5 everywhere: maskness 0, still kept
        assert (inst.scores[inst.pred_classes == 3] == 0).all()


def test_hard_nms_row_keeps_the_predictor_top_k():
    heads = _crowded_heads(None)
    heads.use_soft_nms, heads.test_topk_per_image = False, None
    features, proposals = _crowded_inputs()
    with torch.no_grad():
        (inst,), _ = heads(None, features, proposals)
    assert len(inst) == 100
