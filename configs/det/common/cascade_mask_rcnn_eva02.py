"""Common base of every detection config: EVA-02 ViT + simple feature pyramid + Cascade Mask R-CNN.

The ViTDet recipe as released for EVA-02: p2..p6 pyramid (256 channels, LayerNorm), 2-conv RPN,
three cascade stages (IoU 0.5/0.6/0.7, class-agnostic regression) with 4conv1fc LN box heads,
LSJ augmentation, AdamW with layer-wise lr decay, warmup + multi-step schedule. Defaults are
the EVA-02 B / COCO / 1024 px row; configs override a few fields.

The class count is set in one place, ``model.roi_heads.num_classes``; every cascade predictor and
the mask head read it by interpolation.
"""

from functools import partial

import torch
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling import GeneralizedRCNN, SimpleFeaturePyramid
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, MaskRCNNConvUpsampleHead
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler

from det.lazy_data import lsj_dataloader
from det.lr_decay import eva02_lr_factor
from det.roi_heads import EVACascadeROIHeads
from det.vit import EVA02Net

POOL_SCALES = (1.0 / 4, 1.0 / 8, 1.0 / 16, 1.0 / 32)
PYRAMID = ["p2", "p3", "p4", "p5"]

model = L(GeneralizedRCNN)(
    backbone=L(SimpleFeaturePyramid)(
        net=L(EVA02Net)(
            img_size=1024,
            patch_size=16,
            pretrain_img_size=224,  # grid of the p14to16 checkpoints' position embedding
            embed_dim=768,
            depth=12,
            num_heads=12,
            mlp_ratio=4 * 2 / 3,
            sub_ln=True,
            use_cls_token=False,
            window_size=16,
            window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],  # 2, 5, 8, 11 global
            residual_block_indexes=[],
            drop_path_rate=0.1,
            use_act_checkpoint=False,
            out_feature="last_feat",
        ),
        in_feature="${.net.out_feature}",
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        top_block=L(LastLevelMaxPool)(),
        norm="LN",
        # As released: every image is padded to the img_size square, in training and at test
        # (det.recipe.set_eva02_vit keeps it equal to img_size). 0 pads to a multiple of 64 only.
        square_pad=1024,
    ),
    proposal_generator=L(RPN)(
        in_features=["p2", "p3", "p4", "p5", "p6"],
        head=L(StandardRPNHead)(in_channels=256, num_anchors=3, conv_dims=[-1, -1]),
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[32], [64], [128], [256], [512]],
            aspect_ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64],
            offset=0.0,
        ),
        anchor_matcher=L(Matcher)(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=L(Box2BoxTransform)(weights=[1.0, 1.0, 1.0, 1.0]),
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_topk=(2000, 1000),
        post_nms_topk=(1000, 1000),
        nms_thresh=0.7,
    ),
    roi_heads=L(EVACascadeROIHeads)(
        num_classes=80,
        batch_size_per_image=512,
        positive_fraction=0.25,
        box_in_features=PYRAMID,
        box_pooler=L(ROIPooler)(
            output_size=7, scales=POOL_SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"
        ),
        box_heads=[
            L(FastRCNNConvFCHead)(
                input_shape=ShapeSpec(channels=256, height=7, width=7),
                conv_dims=[256, 256, 256, 256],
                fc_dims=[1024],
                conv_norm="LN",
            )
            for _ in range(3)
        ],
        box_predictors=[
            L(FastRCNNOutputLayers)(
                input_shape=ShapeSpec(channels=1024),
                test_score_thresh=0.05,
                test_topk_per_image=100,
                box2box_transform=L(Box2BoxTransform)(weights=(w1, w1, w2, w2)),
                cls_agnostic_bbox_reg=True,
                num_classes="${...num_classes}",
            )
            for (w1, w2) in [(10, 5), (20, 10), (30, 15)]
        ],
        proposal_matchers=[
            L(Matcher)(thresholds=[th], labels=[0, 1], allow_low_quality_matches=False)
            for th in [0.5, 0.6, 0.7]
        ],
        mask_in_features=PYRAMID,
        mask_pooler=L(ROIPooler)(
            output_size=14, scales=POOL_SCALES, sampling_ratio=0, pooler_type="ROIAlignV2"
        ),
        mask_head=L(MaskRCNNConvUpsampleHead)(
            input_shape=ShapeSpec(channels=256, width=14, height=14),
            num_classes="${..num_classes}",
            conv_dims=[256, 256, 256, 256, 256],
            conv_norm="LN",
        ),
        # System-level inference options (off here; see the *_sys configs).
        use_soft_nms=False,
        method="linear",
        iou_threshold=0.6,
        sigma=0.5,
        class_wise=True,
        override_score_thresh=None,
        maskness_thresh=None,
        # None: the predictors' 100 (COCO) / 300 (LVIS) with NMS; every detection with soft-NMS.
        test_topk_per_image=None,
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
)

dataloader = lsj_dataloader(1024, "coco_2017_train", "coco_2017_val", total_batch_size=64)

train = dict(
    output_dir="./output",
    init_checkpoint="",
    max_iter=60000,
    amp=dict(enabled=True, precision="float16"),  # fp16 needs a GPU (ignored on CPU); bfloat16 runs anywhere
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=True),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    log_period=20,
    device="cuda",  # falls back to CPU when no GPU is present
    seed=-1,
    model_ema=dict(enabled=False, decay=0.9999, device="cuda", use_ema_weights_for_eval_only=False),
)

# Multi-scale + flip test-time augmentation (tools/lazyconfig_train_net.py ... test.aug.enabled=True),
# see det/tta.py. Views must fit in the padded square (max_size <= model.backbone.square_pad).
# test.amp: autocast at evaluation (bfloat16 on CPU or GPU, float16 on GPU); off as released.
test = dict(
    amp=dict(enabled=False, precision="bfloat16"),
    aug=dict(
        enabled=False,
        min_sizes=[640, 800, 1024],
        max_size=1024,
        flip=True,
        merge="nms",  # as released: class-wise NMS over the union of views ("soft_nms": the row's)
        nms_thresh=0.5,
        detections_per_image=None,  # None: the row's evaluator cap (COCO 100, LVIS 300, O365 -> LVIS 1000)
    ),
)

optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        # params.model is set to the model object before instantiating
        base_lr="${..lr}",
        weight_decay_norm=None,
        overrides={},
        lr_factor_func=partial(eva02_lr_factor, lr_decay_rate=0.7, num_layers=12),
    ),
    lr=5e-5,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[48000, 54000],  # 80% and 90% of max_iter
        num_updates=60000,
    ),
    warmup_length=1000 / 60000,
    warmup_factor=0.001,
)
