# eva02_B_ade_seg_upernet_sz512: ADE20K, EVA-02 B (init eva02_B_pt_in21k_p14to16), UperNet 768,
# 512x512, total batch 32 (8 per GPU x 4 GPUs), 60k iterations. Released: 55.3 mIoU (single scale).
_base_ = [
    "../_base_/models/upernet_eva02.py",
    "../_base_/datasets/ade20k.py",
    "../_base_/default_runtime.py",
    "../_base_/schedules/schedule_60k.py",
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch="eva02_base",  # width 768, depth 12, 12 heads, SwiGLU with sub-LN, RoPE
        img_size=512,
        patch_size=16,
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.15,
        pretrained=None,  # --cfg-options model.backbone.pretrained=/path/to/eva02_B_pt_in21k_p14to16.pt
    ),
    decode_head=dict(in_channels=[768, 768, 768, 768], num_classes=150, channels=768),
    auxiliary_head=dict(in_channels=768, num_classes=150),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(341, 341)),
)
optim_wrapper = dict(
    type="AmpOptimWrapper",  # the release trained in fp16 with a dynamic loss scale
    loss_scale="dynamic",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="EVA02LayerDecayOptimizerConstructor",
    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.85),
)
train_dataloader = dict(batch_size=8)
auto_scale_lr = dict(enable=False, base_batch_size=32)
