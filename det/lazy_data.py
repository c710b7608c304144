"""Lazy-config data loaders (large-scale jitter), shared by every detection config."""

from __future__ import annotations

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator
from omegaconf import DictConfig, OmegaConf


def lsj_augmentations(image_size: int, min_scale: float = 0.1, max_scale: float = 2.0) -> list:
    """Flip, ResizeScale(0.1-2.0) and an unpadded FixedSizeCrop: the ViTDet/EVA-02 recipe."""
    return [
        L(T.RandomFlip)(horizontal=True),
        L(T.ResizeScale)(
            min_scale=min_scale, max_scale=max_scale, target_height=image_size, target_width=image_size
        ),
        L(T.FixedSizeCrop)(crop_size=(image_size, image_size), pad=False),
    ]


def lsj_dataloader(
    image_size: int,
    train_names: str | list[str],
    test_names: str,
    *,
    use_instance_mask: bool = True,
    recompute_boxes: bool = True,
    total_batch_size: int = 64,
    num_workers: int = 4,
    min_scale: float = 0.1,
    max_scale: float = 2.0,
) -> DictConfig:
    """``dataloader.{train,test,evaluator}`` for LSJ training at ``image_size`` and COCO evaluation.

    The evaluator uses pycocotools' own COCOeval (``use_fast_impl=False``): the optimized C++
    evaluator needs detectron2's compiled extension.
    """
    dataloader = OmegaConf.create()
    dataloader.train = L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=train_names),
        mapper=L(DatasetMapper)(
            is_train=True,
            augmentations=lsj_augmentations(image_size, min_scale, max_scale),
            image_format="RGB",
            use_instance_mask=use_instance_mask,
            recompute_boxes=recompute_boxes,  # boxes follow the cropped masks
        ),
        total_batch_size=total_batch_size,
        num_workers=num_workers,
    )
    dataloader.test = L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=test_names, filter_empty=False),
        mapper=L(DatasetMapper)(
            is_train=False,
            augmentations=[L(T.ResizeShortestEdge)(short_edge_length=image_size, max_size=image_size)],
            image_format="${...train.mapper.image_format}",
        ),
        num_workers=num_workers,
    )
    dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}", use_fast_impl=False)
    return dataloader


def to_lvis(
    dataloader: DictConfig,
    model: DictConfig,
    train_names: str = "lvis_v1_train",
    test_names: str = "lvis_v1_val",
    max_dets_per_image: int = 300,
    eval_max_dets: int | None = None,
) -> None:
    """Turn a COCO config into the released LVIS v1 recipe, in place.

    Repeat-factor sampling (threshold 0.001), sigmoid cross-entropy with the federated loss
    (class weights: image-count ** 0.5), 1203 classes, score threshold 0.02, 300 detections
    per image from the heads with NMS (soft-NMS rows keep all) and the LVIS evaluator, which keeps
    the best ``eval_max_dets`` per image (default ``max_dets_per_image``; the released
    Objects365 -> LVIS evaluation raised it to 1000).
    """
    from functools import partial

    from detectron2.data.detection_utils import get_fed_loss_cls_weights
    from detectron2.data.samplers import RepeatFactorTrainingSampler
    from detectron2.evaluation import LVISEvaluator

    dataloader.train.dataset.names = train_names
    dataloader.train.sampler = L(RepeatFactorTrainingSampler)(
        repeat_factors=L(RepeatFactorTrainingSampler.repeat_factors_from_category_frequency)(
            dataset_dicts="${dataloader.train.dataset}", repeat_thresh=0.001
        )
    )
    dataloader.test.dataset.names = test_names
    dataloader.evaluator = L(LVISEvaluator)(
        dataset_name="${..test.dataset.names}", max_dets_per_image=eval_max_dets or max_dets_per_image
    )
    model.roi_heads.num_classes = 1203
    for predictor in model.roi_heads.box_predictors:
        predictor.test_score_thresh = 0.02
        predictor.test_topk_per_image = max_dets_per_image
        predictor.use_sigmoid_ce = True
        predictor.use_fed_loss = True
        predictor.get_fed_loss_cls_weights = partial(get_fed_loss_cls_weights, [train_names], 0.5)
