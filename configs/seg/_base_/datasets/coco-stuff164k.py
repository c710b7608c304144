# COCO-Stuff-164K (171 classes; mmseg's layout and label conversion,
# tools/dataset_converters/coco_stuff164k.py -> *_labelTrainIds.png). Same 512 recipe as ADE20K;
# no zero-label reduction (255 is already the ignore index).
_base_ = ["./ade20k.py"]
dataset_type = "COCOStuffDataset"
data_root = "data/coco_stuff164k"
crop_size = (512, 512)
img_scale = (2048, 512)
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
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="images/train2017", seg_map_path="annotations/train2017"),
        pipeline=train_pipeline,
    )
)
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="images/val2017", seg_map_path="annotations/val2017"),
        pipeline=test_pipeline,
    )
)
test_dataloader = val_dataloader
