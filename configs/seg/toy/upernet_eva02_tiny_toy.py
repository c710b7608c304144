# CPU-sized EVA-02 tiny + UperNet on the synthetic shapes set written by tools/make_toy_data.py
# (default folder datasets/toy_ade, relative to the repository root). ADE20K layout and conventions:
# images/{training,validation}/*.jpg, annotations/.../*.png, label 0 = ignore, reduce_zero_label=True
# (so 1 = background becomes class 0). Point it at another folder of the same layout with e.g.
#   --cfg-options train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR \
#     test_dataloader.dataset.data_root=DIR model.decode_head.num_classes=K model.auxiliary_head.num_classes=K
# Labels beyond the metainfo classes do not crash evaluation: mmseg's IoU metric never counts
# them as ground truth.
_base_ = [
    "../_base_/models/upernet_eva02.py",
    "../_base_/default_runtime.py",
]
data_root = "datasets/toy_ade"
num_classes = 6
# Whole 192 px pictures resized to 128 at patch 8: a 16 x 16 token grid, every shape a few tokens
# wide and the whole picture in view (a 128 crop at patch 16, 8 x 8 tokens, was too coarse).
crop_size = (128, 128)
img_scale = (128, 128)
norm_cfg = dict(type="BN", requires_grad=True)  # plain BN: also fine for 2-process gloo runs on CPU
metainfo = dict(
    classes=("background", "circle", "square", "triangle", "star", "cross"),
    palette=[[120, 120, 120], [220, 20, 60], [0, 128, 255], [255, 200, 0], [60, 180, 75], [160, 32, 240]],
)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch="eva02_tiny",
        img_size=128,
        patch_size=8,
        depth=6,
        out_indices=(1, 2, 3, 5),
        drop_path_rate=0.0,
        norm_cfg=norm_cfg,
    ),
    # Heads without normalisation or dropout: trained from scratch, the toy UperNet with BN (or GN)
    # in its heads stays at all-background for hundreds of iterations (toy val mIoU 15.2 after 150
    # iterations, against 85.1 without).
    decode_head=dict(
        in_channels=[192, 192, 192, 192],
        channels=64,
        dropout_ratio=0.0,
        num_classes=num_classes,
        norm_cfg=None,
    ),
    auxiliary_head=dict(
        in_channels=192, channels=64, dropout_ratio=0.0, num_classes=num_classes, norm_cfg=None
    ),
    test_cfg=dict(mode="whole"),
)
find_unused_parameters = False

# ADE20K conventions with the toy class names: BaseSegDataset, since ADE20KDataset only accepts
# subsets of its own 150 names.
dataset_type = "BaseSegDataset"
dataset_common = dict(
    type=dataset_type, metainfo=metainfo, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="Resize", scale=img_scale, keep_ratio=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=img_scale, keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
tta_pipeline = [
    dict(type="LoadImageFromFile", backend_args=None),
    dict(
        type="TestTimeAug",
        transforms=[
            [
                dict(type="ShortSideAtLeastResize", ratio=r, short=128, min_short=96)
                for r in (0.75, 1.0, 1.25)
            ],
            [
                dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                dict(type="RandomFlip", prob=1.0, direction="horizontal"),
            ],
            [dict(type="LoadAnnotations")],
            [dict(type="PackSegInputs")],
        ],
    ),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        **dataset_common,
        data_root=data_root,
        data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        **dataset_common,
        data_root=data_root,
        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

max_iters = 300
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="EVA02LayerDecayOptimizerConstructor",
    paramwise_cfg=dict(num_layers=6, layer_decay_rate=0.9),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=31),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=100, max_keep_ckpts=2),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(
        type="SegVisualizationHook", interval=1
    ),  # `seg_test.py --show-dir`: paint every image
)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"))
randomness = dict(seed=0)
