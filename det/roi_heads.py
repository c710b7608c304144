"""Cascade RoI heads with the inference options of the released EVA-02 results.

Training is exactly detectron2's ``CascadeROIHeads``; at inference it can use class-wise
soft-NMS, override the score threshold and re-score by mask quality ("maskness"). The
argument names match the released evaluation command lines (``model.roi_heads.use_soft_nms``,
``method``, ``iou_threshold``, ``sigma``, ``class_wise``, ``override_score_thresh``,
``maskness_thresh``), plus ``test_topk_per_image`` (detections kept per image; -1 keeps all).

Caps, as released: with hard NMS each image keeps the predictors' ``test_topk_per_image`` (100
COCO, 300 LVIS); with soft-NMS every detection whose decayed score stays above 1e-3 is kept (no
per-image top-k), maskness re-scores all of them and the evaluator caps (COCOeval ``maxDets``,
LVIS ``max_dets_per_image``). ``test_topk_per_image`` set here overrides both.
"""

from __future__ import annotations

from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image

from .maskness import rescore_with_maskness
from .soft_nms import METHODS, soft_nms_inference_single_image


class EVACascadeROIHeads(CascadeROIHeads):
    def __init__(
        self,
        *,
        use_soft_nms: bool = False,
        method: str = "linear",
        iou_threshold: float = 0.3,
        sigma: float = 0.5,
        class_wise: bool = False,
        override_score_thresh: float | None = None,
        maskness_thresh: float | None = None,
        test_topk_per_image: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"model.roi_heads.method must be one of {METHODS}, got {method!r}")
        if maskness_thresh is not None and not self.mask_on:
            raise ValueError("model.roi_heads.maskness_thresh needs a mask head (mask_on)")
        self.use_soft_nms = use_soft_nms
        self.method = method
        self.iou_threshold = iou_threshold
        self.sigma = sigma
        self.class_wise = class_wise
        self.override_score_thresh = override_score_thresh
        self.maskness_thresh = maskness_thresh
        self.test_topk_per_image = test_topk_per_image

    def forward(self, images, features, proposals, targets=None):
        results, losses = super().forward(images, features, proposals, targets)
        if not self.training and self.maskness_thresh is not None:
            results = [rescore_with_maskness(r, self.maskness_thresh) for r in results]
        return results, losses

    def _forward_box(self, features, proposals, targets=None):
        custom = (
            self.use_soft_nms
            or self.override_score_thresh is not None
            or self.test_topk_per_image is not None
        )
        if self.training or not custom:
            return super()._forward_box(features, proposals, targets)
        feats = [features[f] for f in self.box_in_features]
        image_sizes = [x.image_size for x in proposals]
        stage_probs, boxes = [], None
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(boxes, image_sizes)
            predictions = self._run_stage(feats, proposals, k)
            boxes = self.box_predictor[k].predict_boxes(predictions, proposals)
            stage_probs.append(self.box_predictor[k].predict_probs(predictions, proposals))
        # Same merge as detectron2: mean class probabilities over stages, last stage's boxes.
        scores = [sum(per_image) / self.num_cascade_stages for per_image in zip(*stage_probs)]
        last = self.box_predictor[-1]
        thresh = last.test_score_thresh if self.override_score_thresh is None else self.override_score_thresh
        topk = self.test_topk_per_image
        if topk is None:  # the released soft-NMS branch ignores the predictors' top-k
            topk = -1 if self.use_soft_nms else last.test_topk_per_image
        results = []
        for b, s, size in zip(boxes, scores, image_sizes):
            if self.use_soft_nms:
                inst, _ = soft_nms_inference_single_image(
                    b,
                    s,
                    size,
                    thresh,
                    topk,
                    method=self.method,
                    iou_threshold=self.iou_threshold,
                    sigma=self.sigma,
                    class_wise=self.class_wise,
                )
            else:
                inst, _ = fast_rcnn_inference_single_image(b, s, size, thresh, last.test_nms_thresh, topk)
            results.append(inst)
        return results

    def extra_repr(self) -> str:
        return (
            f"use_soft_nms={self.use_soft_nms}, method={self.method}, iou_threshold={self.iou_threshold}, "
            f"class_wise={self.class_wise}, maskness_thresh={self.maskness_thresh}"
        )
