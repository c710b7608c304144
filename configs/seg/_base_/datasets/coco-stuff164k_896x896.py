# COCO-Stuff-164K (171 classes) at 896 crops: EVA-01's Mask2Former COCO-Stuff data recipe
# (configs/coco_stuff164k/eva_mask2former_896_60k_cocostuff164k_ss.py) is the ADE20K 896 recipe
# (pipelines of ade20k_896x896.py) on mmseg's COCOStuffDataset (layout as coco-stuff164k.py).
_base_ = ["./ade20k_896x896.py"]
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
