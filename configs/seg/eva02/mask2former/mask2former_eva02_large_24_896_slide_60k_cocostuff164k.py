# COCO-Stuff-164K (171 classes), EVA-02 L + Mask2Former, 896x896, total batch 32, 60k iterations.
# Recipe reconstructed, not released (the EVA-02 paper's 53.7 mIoU row used Mask2Former, whose
# config was never published): EVA-01's released COCO-Stuff Mask2Former recipe
# (EVA-01/seg/configs/coco_stuff164k/eva_mask2former_896_60k_cocostuff164k_ss.py, 53.4 mIoU for
# EVA-01) with EVA-02's own backbone values (from the released EVA-02 L UperNet config). The head is
# in _base_/models/mask2former_eva02.py.
_base_ = [
    "../../_base_/models/mask2former_eva02.py",
    "../../_base_/datasets/coco-stuff164k_896x896.py",
    "../../_base_/default_runtime.py",
    "../../_base_/schedules/schedule_60k.py",  # EVA-01: 60k iterations, 1500 warm-up, poly power 1
]
custom_imports = dict(imports=["seg", "mmdet.models"], allow_failed_imports=False)
crop_size = (896, 896)  # EVA-01: 896 crop
num_classes = 171
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch="eva02_large",  # width 1024, depth 24 (EVA-01: 1408 wide, depth 40)
        img_size=896,
        patch_size=16,  # EVA-01 and EVA-02 both fine-tune the p14 pre-training at p16 ("p14to16")
        out_indices=(7, 11, 15, 23),  # EVA-02 L UperNet taps (EVA-01 used ViT-Adapter interactions)
        drop_path_rate=0.2,  # EVA-02 L (EVA-01's 0.5 was for its depth-40 model)
        # use_act_checkpoint=True saves memory like EVA-01's with_cp=True, at the same results
        pretrained=None,  # --cfg-options model.backbone.pretrained=/path/to/eva02_L_pt_m38m_p14to16.pt
    ),
    decode_head=dict(
        in_channels=[1024, 1024, 1024, 1024],
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
    ),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(512, 512)),  # EVA-01: slide 896 / 512
)
optim_wrapper = dict(
    # EVA-01 trained these models in fp32 (no fp16 setting); `seg_train.py --amp` for mixed precision
    type="OptimWrapper",
    # EVA-01: AdamW lr 1.5e-5, betas (0.9, 0.999), weight decay 0.05, no gradient clipping
    optimizer=dict(type="AdamW", lr=1.5e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="EVA02LayerDecayOptimizerConstructor",
    paramwise_cfg=dict(
        num_layers=24,  # EVA-02 L depth (EVA-01: 40)
        layer_decay_rate=0.9,  # EVA-02 L UperNet value (EVA-01: 0.95 over its 40 layers)
        # EVA-01's layer-decay rule puts the head's query / level / class / mask embeddings in layer 0
        layer0_prefixes=(
            "decode_head.query_embed",
            "decode_head.query_feat",
            "decode_head.level_embed",
            "decode_head.cls_embed",
            "decode_head.mask_embed",
        ),
    ),
)
train_dataloader = dict(batch_size=1)  # EVA-01: 1 per GPU x 32 GPUs = 32
auto_scale_lr = dict(enable=False, base_batch_size=32)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=10))  # EVA-01: keep 10, evaluate every 1000
