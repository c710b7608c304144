"""Multi-scale + flip test-time augmentation for lazy-config detectors.

detectron2's ``GeneralizedRCNNWithTTA`` reads a handful of yacs keys; they are filled here
from the lazy config (``test.aug.*`` and the model), so no yacs config file is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

from detectron2.config import get_cfg
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA
from torch import nn


def build_tta_model(
    model: nn.Module,
    *,
    min_sizes: Sequence[int],
    max_size: int,
    flip: bool,
    nms_thresh: float = 0.5,
    detections_per_image: int = 100,
    batch_size: int = 1,
) -> GeneralizedRCNNWithTTA:
    """Wrap a ``GeneralizedRCNN``: detections of every size (and its mirror) are merged by
    class-wise NMS at ``nms_thresh``; masks are averaged over the augmented views."""
    if not min_sizes:
        raise ValueError("test.aug.min_sizes must list at least one size")
    base = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    heads = base.roi_heads
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = bool(getattr(heads, "mask_on", False))
    cfg.MODEL.KEYPOINT_ON = False
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = int(heads.num_classes)
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = float(nms_thresh)
    cfg.TEST.DETECTIONS_PER_IMAGE = int(detections_per_image)
    cfg.INPUT.FORMAT = base.input_format
    mapper = DatasetMapperTTA(min_sizes=list(min_sizes), max_size=int(max_size), flip=bool(flip))
    return GeneralizedRCNNWithTTA(cfg, base, tta_mapper=mapper, batch_size=batch_size)


def tta_from_config(cfg, model: nn.Module) -> GeneralizedRCNNWithTTA:
    """TTA model from a lazy config's ``test.aug`` node."""
    aug = cfg.test.aug
    return build_tta_model(
        model,
        min_sizes=aug.min_sizes,
        max_size=aug.max_size,
        flip=aug.flip,
        nms_thresh=aug.get("nms_thresh", 0.5),
        detections_per_image=aug.get("detections_per_image", 100),
    )
