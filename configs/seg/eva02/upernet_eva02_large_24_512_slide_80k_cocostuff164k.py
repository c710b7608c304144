# COCO-Stuff-164K (171 classes), EVA-02 L, UperNet 1024, 512x512: the EVA-02 paper's 53.7 mIoU row.
# No config was released for it; it reuses the released ADE20K L-512 recipe (lr 4e-5, layer
# decay 0.9, drop path 0.2, batch 16, 80k iterations, slide 512 / 341) on the COCO-Stuff data.
_base_ = [
    "../_base_/models/upernet_eva02.py",
    "../_base_/datasets/coco-stuff164k.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_80k.py",
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch="eva02_large",
        img_size=512,
        patch_size=16,
        out_indices=(7, 11, 15, 23),
        drop_path_rate=0.2,
        pretrained=None,
    ),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], num_classes=171, channels=1024),
    auxiliary_head=dict(in_channels=1024, num_classes=171),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)
optim_wrapper = dict(
    type="AmpOptimWrapper",
    loss_scale="dynamic",
    optimizer=dict(type="AdamW", lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="EVA02LayerDecayOptimizerConstructor",
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.9),
)
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
