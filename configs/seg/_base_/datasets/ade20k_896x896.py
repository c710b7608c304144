# ADE20K at 896 crops, EVA-01's Mask2Former data recipe (configs/ade20k/eva_mask2former_896_*):
# random resize of (3584, 896) with ratio 0.5-2.0, 896 crop (cat_max_ratio 0.75), flip, photometric
# distortion, padding to 896 (data preprocessor); test: resize to (3584, 896) keeping the ratio, then
# to a multiple of 32 (EVA-01's ResizeToMultiple). `--tta` is EVA-01's multi-scale protocol (the
# `_ms` config, 62.3 mIoU for EVA-01): scales (4 s, s) for s = 512..1280 step 128 (EVA-01's ratios
# 512/896..1280/896 of (3584, 896)), resize to a multiple of 32, both flips, image sides below 896
# zero-padded to 896 (PadShortSide, seg/mask2former.py) and the padding cut off the prediction.
_base_ = ["./ade20k.py"]
crop_size = (896, 896)
img_scale = (3584, 896)
tta_short_sides = [512, 640, 768, 896, 1024, 1152, 1280]  # EVA-01 img_ratios x 896, scale (4 s, s)
# PackSegInputs' default metainfo + the padding PadShortSide records (removed from the prediction)
tta_meta_keys = (
    "img_path",
    "seg_map_path",
    "ori_shape",
    "img_shape",
    "pad_shape",
    "scale_factor",
    "flip",
    "flip_direction",
    "reduce_zero_label",
    "img_padding_size",
)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=img_scale, keep_ratio=True),
    dict(type="ResizeToMultiple", size_divisor=32),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
tta_pipeline = [
    dict(type="LoadImageFromFile", backend_args=None),
    dict(
        type="TestTimeAug",
        transforms=[
            [dict(type="Resize", scale=(4 * s, s), keep_ratio=True) for s in tta_short_sides],
            [dict(type="ResizeToMultiple", size_divisor=32)],
            [
                dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                dict(type="RandomFlip", prob=1.0, direction="horizontal"),
            ],
            [dict(type="PadShortSide", size=896)],
            [dict(type="LoadAnnotations")],
            [dict(type="PackSegInputs", meta_keys=tta_meta_keys)],
        ],
    ),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
