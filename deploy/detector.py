"""The whole Cascade Mask R-CNN inference of detectron2 as one exportable module.

:class:`DetectorGraph` runs ``model.inference([...], do_postprocess=False)`` with the model's own
submodules (backbone, RPN head, anchor generator, box transforms, RoI poolers' ``ROIAlign``,
box heads and predictors, mask head) and rewrites only detectron2's data-dependent control flow
into branch-free steps with the same results:

- RPN: per-level top-k with a static k (the square padding fixes the feature-map sizes); boxes
  that detectron2 removes (non-finite, empty after clipping) get the score ``-inf`` instead and
  the NMS drops them (:func:`deploy.ops.batched_nms`, one grouped NMS for all levels);
- RoI pooling: every box is pooled at every level and each box takes the level detectron2's
  ``assign_boxes_to_levels`` gives it (instead of gathering the boxes of each level by
  ``nonzero`` and scattering the results back);
- detections: all (box, class) pairs go into one grouped NMS with the score threshold inside
  it; the NMS output is sorted by score, so the top-k per image is a slice;
- mask head on the final boxes, the predicted class's channel, sigmoid; maskness re-scoring
  (when ``model.roi_heads.maskness_thresh`` is set) re-scores and re-sorts as the eager heads do.

Soft-NMS has no standard ONNX operator: models configured with it are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .graphs import DetectorPyramidGraph
from .ops import batched_nms


def clip_boxes(boxes: Tensor, height, width) -> Tensor:
    """``Boxes.clip`` for (N, 4) boxes in an (height, width) image; the size may be symbolic."""
    x1 = boxes[:, 0].clamp(min=0, max=width)
    y1 = boxes[:, 1].clamp(min=0, max=height)
    x2 = boxes[:, 2].clamp(min=0, max=width)
    y2 = boxes[:, 3].clamp(min=0, max=height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def unsupported_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot go into one detector graph, or None when it can."""
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.proposal_generator import RPN
    from detectron2.modeling.roi_heads import CascadeROIHeads

    if not isinstance(model, GeneralizedRCNN):
        return f"the model is a {type(model).__name__}, not a detectron2 GeneralizedRCNN"
    if not isinstance(model.proposal_generator, RPN):
        return f"proposal_generator is a {type(model.proposal_generator).__name__}, not detectron2's RPN"
    heads = model.roi_heads
    if not isinstance(heads, CascadeROIHeads):
        return f"roi_heads is a {type(heads).__name__}, not a CascadeROIHeads"
    if getattr(heads, "use_soft_nms", False):
        return (
            "model.roi_heads.use_soft_nms=True: soft-NMS has no standard ONNX operator; export with "
            "model.roi_heads.use_soft_nms=False (hard NMS) or --detector-part pyramid"
        )
    if not heads.mask_on or heads.mask_pooler is None:
        return "roi_heads has no pooled mask head (mask_on)"
    if heads.keypoint_on:
        return "keypoint heads are not exported"
    if any(p.bbox_pred.out_features != 4 for p in heads.box_predictor):
        return "the cascade predictors are not class-agnostic (cls_agnostic_bbox_reg)"
    if not model.backbone.padding_constraints.get("square_size", 0):
        return (
            "the backbone has no square padding (model.backbone.square_pad=0): the RPN's per-level "
            "top-k would depend on the input size"
        )
    return None


class DetectorGraph(nn.Module):
    """detectron2 Cascade Mask R-CNN, image to detections.

    ``image`` (3, H, W) in the config's input format, already resized by the test-time resize ->
    ``boxes`` (R, 4) in input pixels, ``scores`` (R), ``classes`` (R, int64), ``masks`` (R, 1, M, M)
    mask-head probabilities: what ``model.inference([...], do_postprocess=False)`` returns.
    Padding and normalisation are inside (:class:`DetectorPyramidGraph`).
    """

    output_names = ("boxes", "scores", "classes", "masks")
    image_rank = 3

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        reason = unsupported_reason(model)
        if reason is not None:
            raise TypeError(reason)
        self.pyramid = DetectorPyramidGraph(model)
        self.model = model
        self.size_multiple = 1
        self.max_size = self.pyramid.max_size

    # ------------------------------------------------------------------------------------ RPN
    def proposals(self, features: dict[str, Tensor], height, width) -> Tensor:
        """(P, 4) proposals, as ``find_top_rpn_proposals`` at inference, best first."""
        rpn = self.model.proposal_generator
        maps = [features[f] for f in rpn.in_features]
        anchors = rpn.anchor_generator(maps)
        logits, deltas = rpn.rpn_head(maps)
        logits = [score.permute(0, 2, 3, 1).flatten(1) for score in logits]
        box_dim = rpn.anchor_generator.box_dim
        deltas = [
            d.view(d.shape[0], -1, box_dim, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
            for d in deltas
        ]
        decoded = rpn._decode_proposals(anchors, deltas)
        pre_nms_topk = rpn.pre_nms_topk[False]
        boxes, scores, levels = [], [], []
        for level, (boxes_i, logits_i) in enumerate(zip(decoded, logits)):
            k = min(logits_i.shape[1], pre_nms_topk)  # static: the padded size is
            top_scores, top_index = logits_i[0].topk(k)
            boxes.append(boxes_i[0][top_index])
            scores.append(top_scores)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=top_scores.device))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes = clip_boxes(boxes, height, width)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        valid = valid & (widths > rpn.min_box_size) & (heights > rpn.min_box_size)
        scores = torch.where(valid, scores, torch.full_like(scores, float("-inf")))
        keep = batched_nms(boxes, scores, levels, rpn.nms_thresh, float("-inf"))
        return boxes[keep[: rpn.post_nms_topk[False]]]

    # ------------------------------------------------------------------------------ RoI heads
    @staticmethod
    def pool(pooler: nn.Module, maps: list[Tensor], boxes: Tensor) -> Tensor:
        """``ROIPooler`` on one image's boxes: every level pooled, each box takes its own level."""
        from detectron2.modeling.poolers import assign_boxes_to_levels
        from detectron2.structures import Boxes

        rois = torch.cat((torch.zeros_like(boxes[:, :1]), boxes), dim=1)  # batch index 0
        if len(pooler.level_poolers) == 1:
            return pooler.level_poolers[0](maps[0], rois)
        # Boxes without its constructor, whose shape checks guard on the (data-dependent) count
        box_list = Boxes.__new__(Boxes)
        box_list.tensor = boxes
        levels = assign_boxes_to_levels(
            [box_list], pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
        )
        pooled = None
        for level, (x, level_pooler) in enumerate(zip(maps, pooler.level_poolers)):
            out = level_pooler(x, rois)
            pooled = out if pooled is None else torch.where((levels == level).view(-1, 1, 1, 1), out, pooled)
        return pooled

    def detections(self, features: dict[str, Tensor], proposals: Tensor, height, width):
        """Cascade stages and per-class NMS: (boxes, scores, classes), best first."""
        heads = self.model.roi_heads
        maps = [features[f] for f in heads.box_in_features]
        boxes, stage_probs = proposals, []
        for k in range(heads.num_cascade_stages):
            if k > 0:
                boxes = clip_boxes(boxes, height, width)
            predictor = heads.box_predictor[k]
            logits, deltas = predictor(heads.box_head[k](self.pool(heads.box_pooler, maps, boxes)))
            stage_probs.append(logits.sigmoid() if predictor.use_sigmoid_ce else F.softmax(logits, dim=-1))
            boxes = predictor.box2box_transform.apply_deltas(deltas, boxes)
        last = heads.box_predictor[-1]
        # the two eager paths average the same way but round differently: follow the model's
        custom = getattr(heads, "override_score_thresh", None) is not None
        custom = custom or getattr(heads, "test_topk_per_image", None) is not None
        if custom:
            scores = sum(stage_probs) / heads.num_cascade_stages
            thresh, topk = heads.override_score_thresh, heads.test_topk_per_image
            thresh = last.test_score_thresh if thresh is None else thresh
            topk = last.test_topk_per_image if topk is None else topk
        else:
            scores = sum(stage_probs) * (1.0 / heads.num_cascade_stages)
            thresh, topk = last.test_score_thresh, last.test_topk_per_image
        # fast_rcnn_inference_single_image without boolean indexing
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
        scores = scores[:, :-1]
        num_classes = scores.shape[1]
        boxes = clip_boxes(boxes, height, width)
        scores = torch.where(valid[:, None], scores, torch.full_like(scores, float("-inf")))
        flat_boxes = boxes[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)  # row-major, as nonzero
        flat_scores = scores.reshape(-1)
        classes = torch.arange(num_classes, device=boxes.device).repeat(boxes.shape[0])
        keep = batched_nms(flat_boxes, flat_scores, classes, last.test_nms_thresh, thresh)
        if topk >= 0:
            keep = keep[:topk]
        return flat_boxes[keep], flat_scores[keep], classes[keep]

    def masks(self, features: dict[str, Tensor], boxes: Tensor, classes: Tensor) -> Tensor:
        """(R, 1, M, M) probabilities of the mask head for each box's class (``mask_rcnn_inference``)."""
        heads = self.model.roi_heads
        maps = [features[f] for f in heads.mask_in_features]
        logits = heads.mask_head.layers(self.pool(heads.mask_pooler, maps, boxes))
        if logits.shape[1] > 1:  # class-specific masks: the predicted class's channel
            index = classes.view(-1, 1, 1, 1).expand(-1, 1, logits.shape[2], logits.shape[3])
            logits = logits.gather(1, index)
        return logits.sigmoid()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        height, width = image.shape[-2:]
        features = self.model.backbone(self.pyramid.preprocess(image).tensor)
        proposals = self.proposals(features, height, width)
        boxes, scores, classes = self.detections(features, proposals, height, width)
        masks = self.masks(features, boxes, classes)
        threshold = getattr(self.model.roi_heads, "maskness_thresh", None)
        if threshold is not None:  # as det.roi_heads: re-score by maskness, re-sort
            from det.maskness import maskness

            scores = scores * maskness(masks, threshold).to(scores)
            order = torch.argsort(scores, descending=True)
            boxes, scores, classes, masks = boxes[order], scores[order], classes[order], masks[order]
        return boxes, scores, classes, masks
