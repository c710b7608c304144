"""Multi-scale + flip test-time augmentation that keeps the row's post-processing.

Built on detectron2's ``GeneralizedRCNNWithTTA`` (its views, box merge and mask averaging):

1. every view (``test.aug.min_sizes`` x flip) runs the row's own box inference, mask head off:
   soft-NMS and score threshold as configured in ``model.roi_heads``;
2. the union of all views is merged, as released, by detectron2's class-wise NMS at
   ``test.aug.nms_thresh`` (``test.aug.merge="soft_nms"``: the row's soft-NMS instead);
3. the mask head runs on the merged boxes in every view and the mask probabilities are averaged
   (detectron2's ``_reduce_pred_masks``);
4. with ``model.roi_heads.maskness_thresh`` the merged scores are multiplied by the maskness of the
   averaged probabilities and re-sorted, exactly as without TTA;
5. each image keeps ``test.aug.detections_per_image`` detections (default: the row's evaluator cap,
   COCO 100, LVIS 300, Objects365 -> LVIS 1000), after maskness when maskness is on.

detectron2 reads a handful of yacs keys; they are filled from the lazy config, so no yacs file is
needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.config import get_cfg
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from detectron2.structures import Boxes, Instances
from torch import nn

from .maskness import rescore_with_maskness
from .soft_nms import batched_soft_nms

MERGES = ("nms", "soft_nms")
# COCOeval's largest maxDets: what a COCO row hands to the evaluator per image.
COCO_MAX_DETS = 100


class EVAGeneralizedRCNNWithTTA(GeneralizedRCNNWithTTA):
    """detectron2's TTA plus the row's maskness, soft-NMS merge option and per-row cap."""

    def __init__(
        self,
        model: nn.Module,
        *,
        min_sizes: Sequence[int],
        max_size: int,
        flip: bool,
        merge: str = "nms",
        nms_thresh: float = 0.5,
        detections_per_image: int = COCO_MAX_DETS,
        batch_size: int = 1,
    ) -> None:
        if not min_sizes:
            raise ValueError("test.aug.min_sizes must list at least one size")
        if merge not in MERGES:
            raise ValueError(f"test.aug.merge must be one of {MERGES}, got {merge!r}")
        base = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        heads = base.roi_heads
        square = int(getattr(base.backbone, "padding_constraints", {}).get("square_size", 0) or 0)
        if square > 0 and max_size > square:
            # detectron2's ImageList would crop such a view to the square, silently.
            raise ValueError(
                f"test.aug.max_size={max_size} exceeds model.backbone.square_pad={square}: every view must "
                "fit in the padded square (lower test.aug.max_size or set model.backbone.square_pad=0)"
            )
        self.mask_on = bool(getattr(heads, "mask_on", False))
        self.maskness_thresh = getattr(heads, "maskness_thresh", None)
        self.merge = merge
        self.detections_per_image = int(detections_per_image)
        cfg = get_cfg()
        # The mask stage runs in _inference_one_image below, so that maskness can use the
        # averaged probabilities before they are pasted into the image.
        cfg.MODEL.MASK_ON = False
        cfg.MODEL.KEYPOINT_ON = False
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = int(heads.num_classes)
        cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = float(nms_thresh)
        # With maskness the cap comes after re-scoring, as without TTA (maskness, then the cap).
        keep_all = self.mask_on and self.maskness_thresh is not None
        cfg.TEST.DETECTIONS_PER_IMAGE = -1 if keep_all else self.detections_per_image
        cfg.INPUT.FORMAT = base.input_format
        mapper = DatasetMapperTTA(min_sizes=list(min_sizes), max_size=int(max_size), flip=bool(flip))
        super().__init__(cfg, base, tta_mapper=mapper, batch_size=batch_size)

    def _merge_detections(self, all_boxes, all_scores, all_classes, shape_hw):
        if self.merge == "nms":
            return super()._merge_detections(all_boxes, all_scores, all_classes, shape_hw)
        heads = self.model.roi_heads
        boxes = Boxes(all_boxes.clone())
        boxes.clip(shape_hw)
        scores = torch.stack(list(all_scores)) if len(all_scores) else all_boxes.new_zeros(0)
        classes = torch.stack(list(all_classes)) if len(all_classes) else all_boxes.new_zeros(0).long()
        new_scores, keep = batched_soft_nms(
            boxes.tensor,
            scores,
            classes,
            method=heads.method,
            iou_threshold=heads.iou_threshold,
            sigma=heads.sigma,
            class_wise=heads.class_wise,
        )
        cap = self.cfg.TEST.DETECTIONS_PER_IMAGE
        if cap >= 0:
            new_scores, keep = new_scores[:cap], keep[:cap]
        merged = Instances(shape_hw)
        merged.pred_boxes = Boxes(boxes.tensor[keep])
        merged.scores = new_scores
        merged.pred_classes = classes[keep]
        return merged

    def _inference_one_image(self, input):
        # Box stage: detectron2's views and merge (the mask head is off in self.cfg).
        merged = super()._inference_one_image(input)["instances"]
        if not self.mask_on:
            return {"instances": merged}
        # Mask stage: detectron2's own steps, with maskness between averaging and pasting.
        augmented_inputs, tfms = self._get_augmented_inputs(input)
        augmented_instances = self._rescale_detected_boxes(augmented_inputs, merged, tfms)
        outputs = self._batch_inference(augmented_inputs, augmented_instances)
        merged.pred_masks = self._reduce_pred_masks(outputs, tfms)
        if self.maskness_thresh is not None:
            merged = rescore_with_maskness(merged, self.maskness_thresh)
            if self.detections_per_image >= 0:
                merged = merged[: self.detections_per_image]
        return {"instances": detector_postprocess(merged, input["height"], input["width"])}


def row_detection_cap(cfg) -> int:
    """Detections per image the row hands to its evaluator: LVIS ``max_dets_per_image`` (300, or
    1000 for Objects365 -> LVIS), else COCOeval's 100."""
    evaluator = cfg.dataloader.get("evaluator") or {}
    cap = evaluator.get("max_dets_per_image", None)
    return int(cap) if cap is not None else COCO_MAX_DETS


def tta_from_config(cfg, model: nn.Module) -> EVAGeneralizedRCNNWithTTA:
    """TTA model from a lazy config's ``test.aug`` node."""
    aug = cfg.test.aug
    cap = aug.get("detections_per_image", None)
    return EVAGeneralizedRCNNWithTTA(
        model,
        min_sizes=aug.min_sizes,
        max_size=aug.max_size,
        flip=aug.flip,
        merge=aug.get("merge", "nms"),
        nms_thresh=aug.get("nms_thresh", 0.5),
        detections_per_image=row_detection_cap(cfg) if cap is None else int(cap),
    )
