# eva02_L_ade_seg_upernet_sz640: ADE20K, EVA-02 L, UperNet 1536 (decode and auxiliary heads),
# 640x640, total batch 16, 80k iterations, slide 640 / 426. Released: 60.1 mIoU single scale.
_base_ = [
    "../_base_/models/upernet_eva02.py",
    "../_base_/datasets/ade20k_640x640.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_80k.py",
]
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch="eva02_large",
        img_size=640,
        patch_size=16,
        out_indices=(7, 11, 15, 23),
        drop_path_rate=0.2,
        pretrained=None,  # --cfg-options model.backbone.pretrained=/path/to/eva02_L_pt_m38m_p14to16.pt
    ),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1536, num_classes=150),
    auxiliary_head=dict(in_channels=1024, channels=1536, num_classes=150),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(426, 426)),
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
