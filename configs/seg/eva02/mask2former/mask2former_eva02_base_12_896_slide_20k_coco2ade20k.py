# ADE20K (150 classes), EVA-02 B + Mask2Former fine-tuned from the COCO-Stuff-164K model
# (mask2former_eva02_base_12_896_slide_60k_cocostuff164k.py), 896x896, total batch 64, 20k iterations.
# Recipe reconstructed, not released (EVA-02 published UperNet configs only, Mask2Former rows for L):
# EVA-01's released ADE20K recipe (EVA-01/seg/configs/ade20k/eva_mask2former_896_20k_coco164k2ade20k_ss.py,
# 61.5 single scale / 62.3 multi-scale (`_ms.py`) for EVA-01) with EVA-02's own backbone values and
# the 256-wide head of the B COCO-Stuff config (below).
# Single scale: slide 896 / 512. Multi-scale + flip (EVA-01's `_ms` protocol): seg_test.py --tta.
_base_ = [
    "../../_base_/models/mask2former_eva02.py",
    "../../_base_/datasets/ade20k_896x896.py",
    "../../_base_/default_runtime.py",
    "../../_base_/schedules/schedule_20k.py",  # EVA-01: 20k iterations, 500 warm-up, poly power 1
]
custom_imports = dict(imports=["seg", "mmdet.models"], allow_failed_imports=False)
crop_size = (896, 896)
num_classes = 150
# EVA-01: the whole segmentor starts from its COCO-Stuff model (load_from). Here: the last checkpoint
# that tools/seg_train.py writes for the COCO-Stuff config; any other path with --cfg-options load_from=.
load_from = "work_dirs/mask2former_eva02_base_12_896_slide_60k_cocostuff164k/iter_60000.pth"
custom_hooks = [
    dict(
        type="SegmentorCheckpointHook",
        # 171 -> 150 classes: the class embedding (decode_head.cls_embed) starts afresh, logged
        reinit_class_layers=True,
        require_load_from=True,
        load_from_hint="Train configs/seg/eva02/mask2former/"
        "mask2former_eva02_base_12_896_slide_60k_cocostuff164k.py first, or pass "
        "--cfg-options load_from=/path/to/the/cocostuff164k/model.pth",
    )
]
# Head width: EVA-01's 1024-wide head (the base) was sized for its 1B backbone, and EVA-01 has no
# B-size model. B takes Mask2Former's standard 256-wide head (8 heads; FFN 1024 in the pixel decoder,
# 2048 in the transformer decoder: the Mask2Former paper and mmseg's configs/mask2former/*), keeping
# EVA-01's 200 queries, 8 decoder layers, losses, matching and schedule.
head_width = 256
attn_256 = dict(embed_dims=head_width, num_heads=8)
b_head = dict(
    in_channels=[768, 768, 768, 768],
    feat_channels=head_width,
    out_channels=head_width,
    pixel_decoder=dict(
        encoder=dict(
            layer_cfg=dict(
                self_attn_cfg=attn_256, ffn_cfg=dict(embed_dims=head_width, feedforward_channels=1024)
            )
        ),
        positional_encoding=dict(num_feats=head_width // 2),
    ),
    positional_encoding=dict(num_feats=head_width // 2),
    transformer_decoder=dict(
        layer_cfg=dict(
            self_attn_cfg=attn_256,
            cross_attn_cfg=attn_256,
            ffn_cfg=dict(embed_dims=head_width, feedforward_channels=2048),
        )
    ),
)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch="eva02_base",  # width 768, depth 12 (EVA-01: 1408 wide, depth 40)
        img_size=896,
        patch_size=16,
        out_indices=(3, 5, 7, 11),  # EVA-02 B UperNet taps
        drop_path_rate=0.15,  # EVA-02 B (EVA-01: 0.5 at depth 40)
        pretrained=None,  # every weight comes from load_from
    ),
    decode_head=dict(
        **b_head,
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1]),
    ),
    test_cfg=dict(mode="slide", crop_size=crop_size, stride=(512, 512)),  # EVA-01: slide 896 / 512
)
optim_wrapper = dict(
    type="OptimWrapper",  # EVA-01: fp32
    # EVA-01 (ADE20K from COCO-Stuff): AdamW lr 2.5e-5, betas (0.9, 0.999), weight decay 0.05
    optimizer=dict(type="AdamW", lr=2.5e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor="EVA02LayerDecayOptimizerConstructor",
    paramwise_cfg=dict(
        num_layers=12,  # EVA-02 B depth (EVA-01: 40)
        layer_decay_rate=0.85,  # EVA-02 B UperNet value (EVA-01: 0.95)
        layer0_prefixes=(  # EVA-01's rule, as in the COCO-Stuff config
            "decode_head.query_embed",
            "decode_head.query_feat",
            "decode_head.level_embed",
            "decode_head.cls_embed",
            "decode_head.mask_embed",
        ),
    ),
)
train_dataloader = dict(batch_size=1)  # EVA-01: 1 per GPU x 64 GPUs = 64
auto_scale_lr = dict(enable=False, base_batch_size=64)
