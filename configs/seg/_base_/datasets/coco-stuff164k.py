# COCO-Stuff-164K (171 classes; mmseg's layout and label conversion,
# tools/dataset_converters/coco_stuff164k.py -> *_labelTrainIds.png). Same 512 recipe as ADE20K;
# no zero-label reduction (255 is already the ignore index); pipelines from ade20k.py.
_base_ = ["./ade20k.py"]
dataset_type = "COCOStuffDataset"
data_root = "data/coco_stuff164k"
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="images/train2017", seg_map_path="annotations/train2017"),
    )
)
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path="images/val2017", seg_map_path="annotations/val2017"),
    )
)
test_dataloader = val_dataloader
