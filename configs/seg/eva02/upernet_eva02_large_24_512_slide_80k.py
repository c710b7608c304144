# eva02_L_ade_seg_upernet_sz512: ADE20K, EVA-02 L (init eva02_L_pt_m38m_p14to16), UperNet 1024,
# 512x512, total batch 16 (2 per GPU x 8 GPUs), 80k iterations. Released: 59.8 mIoU single scale,
# 60.4 with multi-scale + flip (`seg_test.py --tta`, see upernet_eva02_large_24_512_slide_ms_eval.py).
_base_ = [
    "../_base_/models/upernet_eva02.py",
    "../_base_/datasets/ade20k.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_80k.py",
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch="eva02_large",  # width 1024, depth 24, 16 heads
        img_size=512,
        patch_size=16,
        out_indices=(7, 11, 15, 23),
        drop_path_rate=0.2,
        pretrained=None,  # --cfg-options model.backbone.pretrained=/path/to/eva02_L_pt_m38m_p14to16.pt
    ),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], num_classes=150, channels=1024),
    auxiliary_head=dict(in_channels=1024, num_classes=150),
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
