# Mask2Former (mmseg 1.x `Mask2FormerHead` on mmdet 3.x) on the plain EVA-02 backbone and its simple
# pyramid (fpn1..4: strides 4, 8, 16, 32, every map `embed_dim` wide; no ViT-Adapter, see below).
#
# Recipe reconstructed, not released: EVA-02 released only UperNet configs. The head below is the one
# of EVA-01's released Mask2Former configs (EVA-01/seg/configs/coco_stuff164k/
# eva_mask2former_896_60k_cocostuff164k_ss.py and ade20k/eva_mask2former_896_20k_coco164k2ade20k_*.py,
# head defaults from _base_/models/mask2former_beit*.py), spelled with mmseg 1.x / mmdet 3.x types as
# in mmseg's own configs/mask2former/mask2former_*_ade20k-512x512.py. EVA-01 fed it from a ViT-Adapter;
# EVA-02's authors report the adapter does not help EVA-02 (baaivision/EVA issue #96), so the plain
# EVA-02 pyramid of the released UperNet model feeds the pixel decoder here.
# Defaults are the L model (the EVA-02 paper's Mask2Former rows); B configs narrow the head (see there).
# Class counts (num_classes and the matching class_weight) are set per config.
num_classes = 150
norm_cfg = dict(type="SyncBN", requires_grad=True)  # pyramid norm of the released EVA-02 seg backbone
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],  # EVA-01 img_norm_cfg (ImageNet, RGB)
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,  # EVA-01 `Pad(pad_val=0, seg_pad_val=255)` to the crop size
    seg_pad_val=255,
)
model = dict(
    # mmseg's EncoderDecoder plus checks that the pyramid fits the pixel decoder (seg/mask2former.py)
    type="Mask2FormerEncoderDecoder",
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type="EVA02",
        arch="eva02_large",
        img_size=896,
        patch_size=16,
        out_indices=(7, 11, 15, 23),  # EVA-02 L UperNet taps (B: 3, 5, 7, 11)
        drop_path_rate=0.2,  # EVA-02 L (B: 0.15)
        use_cls_token=True,  # as the released EVA-02 seg backbone
        norm_cfg=norm_cfg,
        pretrained=None,
    ),
    decode_head=dict(
        type="Mask2FormerHead",
        in_channels=[1024, 1024, 1024, 1024],  # EVA-02 pyramid: embed_dim at every level
        strides=[4, 8, 16, 32],  # must equal the backbone's pyramid strides (checked at build time)
        in_index=[0, 1, 2, 3],
        # EVA-01: feat_channels = out_channels = 1024 (mmseg's own configs: 256), 200 queries (100),
        # 3 deformable-attention levels (strides 8, 16, 32; stride 4 is the mask-feature level)
        feat_channels=1024,
        out_channels=1024,
        num_classes=num_classes,
        num_queries=200,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type="mmdet.MSDeformAttnPixelDecoder",
            num_outs=3,
            norm_cfg=dict(type="GN", num_groups=32),
            act_cfg=dict(type="ReLU"),
            encoder=dict(  # EVA-01: 6 deformable encoder layers, 1024 wide, 32 heads, FFN 4096
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=1024,
                        num_heads=32,
                        num_levels=3,
                        num_points=4,
                        im2col_step=64,
                        dropout=0.0,
                        batch_first=True,
                        norm_cfg=None,
                        init_cfg=None,
                    ),
                    ffn_cfg=dict(
                        embed_dims=1024,
                        feedforward_channels=4096,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type="ReLU", inplace=True),
                    ),
                ),
                init_cfg=None,
            ),
            positional_encoding=dict(num_feats=512, normalize=True),  # EVA-01: 512 = 1024 / 2
            init_cfg=None,
        ),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=512, normalize=True),
        transformer_decoder=dict(  # EVA-01 (no rel-pos / layerscale models): 8 masked-attention layers
            return_intermediate=True,
            num_layers=8,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=1024,
                    num_heads=32,
                    attn_drop=0.0,
                    proj_drop=0.0,
                    dropout_layer=None,
                    batch_first=True,
                ),
                cross_attn_cfg=dict(
                    embed_dims=1024,
                    num_heads=32,
                    attn_drop=0.0,
                    proj_drop=0.0,
                    dropout_layer=None,
                    batch_first=True,
                ),
                ffn_cfg=dict(
                    embed_dims=1024,
                    feedforward_channels=4096,
                    num_fcs=2,
                    act_cfg=dict(type="ReLU", inplace=True),
                    ffn_drop=0.0,
                    dropout_layer=None,
                    add_identity=True,
                ),
            ),
            init_cfg=None,
        ),
        # EVA-01 loss weights (Mask2Former's): class 2 (the "no object" class weighted 0.1), mask BCE 5,
        # dice 5. `class_weight` has num_classes + 1 entries: every config sets it with its class count.
        loss_cls=dict(
            type="mmdet.CrossEntropyLoss",
            use_sigmoid=False,
            loss_weight=2.0,
            reduction="mean",
            class_weight=[1.0] * num_classes + [0.1],
        ),
        loss_mask=dict(type="mmdet.CrossEntropyLoss", use_sigmoid=True, reduction="mean", loss_weight=5.0),
        loss_dice=dict(
            type="mmdet.DiceLoss",
            use_sigmoid=True,
            activate=True,
            reduction="mean",
            naive_dice=True,
            eps=1.0,
            loss_weight=5.0,
        ),
        # EVA-01: losses on 12544 points (oversample 3, 75% importance sampled); Hungarian matching with
        # the loss weights as costs (class 2, mask BCE 5, dice 5)
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type="mmdet.HungarianAssigner",
                match_costs=[
                    dict(type="mmdet.ClassificationCost", weight=2.0),
                    dict(type="mmdet.CrossEntropyLossCost", weight=5.0, use_sigmoid=True),
                    dict(type="mmdet.DiceCost", weight=5.0, pred_act=True, eps=1.0),
                ],
            ),
            sampler=dict(type="mmdet.MaskPseudoSampler"),
        ),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
# Every parameter of the backbone, pyramid and head takes part in the loss.
find_unused_parameters = False
# The head's types live in mmdet's registry: every config using this base sets
# custom_imports = dict(imports=["seg", "mmdet.models"], allow_failed_imports=False)
# (not here: default_runtime.py already defines custom_imports, and bases may not repeat a key).
# A checkpoint given to `load_from` (or seg_test.py) must have this config's class count; fine-tuning
# configs set `reinit_class_layers=True` (see seg/finetune.py).
custom_hooks = [dict(type="SegmentorCheckpointHook")]
