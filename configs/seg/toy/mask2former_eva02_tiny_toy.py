# CPU-sized EVA-02 tiny + Mask2Former on the synthetic shapes set of tools/make_toy_data.py: the toy
# UperNet's data, backbone, crop, schedule length and test protocol (upernet_eva02_tiny_toy.py), with
# the Mask2Former head of _base_/models/mask2former_eva02.py scaled down (64 channels, 2 encoder
# and 3 decoder layers, 16 queries) and EVA-01's losses and matching costs unchanged.
# Point it at another folder of the same layout with K classes with
#   --cfg-options train_dataloader.dataset.data_root=DIR val_dataloader.dataset.data_root=DIR \
#     test_dataloader.dataset.data_root=DIR model.decode_head.num_classes=K \
#     model.decode_head.loss_cls.class_weight="[1.0]*K+[0.1]" (written out, K + 1 entries)
_base_ = ["./upernet_eva02_tiny_toy.py"]
custom_imports = dict(imports=["seg", "mmdet.models"], allow_failed_imports=False)
num_classes = 6
head_dim = 64
model = dict(
    type="Mask2FormerEncoderDecoder",
    backbone=dict(arch="eva02_tiny", img_size=128, patch_size=8, depth=6, out_indices=(1, 2, 3, 5)),
    decode_head=dict(
        _delete_=True,
        type="Mask2FormerHead",
        in_channels=[192, 192, 192, 192],
        strides=[4, 8, 16, 32],
        in_index=[0, 1, 2, 3],
        feat_channels=head_dim,
        out_channels=head_dim,
        num_classes=num_classes,
        num_queries=16,
        num_transformer_feat_level=3,
        align_corners=False,
        pixel_decoder=dict(
            type="mmdet.MSDeformAttnPixelDecoder",
            num_outs=3,
            norm_cfg=dict(type="GN", num_groups=32),
            act_cfg=dict(type="ReLU"),
            encoder=dict(
                num_layers=2,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=head_dim,
                        num_heads=4,
                        num_levels=3,
                        num_points=4,
                        im2col_step=64,
                        dropout=0.0,
                        batch_first=True,
                        norm_cfg=None,
                        init_cfg=None,
                    ),
                    ffn_cfg=dict(
                        embed_dims=head_dim,
                        feedforward_channels=4 * head_dim,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type="ReLU", inplace=True),
                    ),
                ),
                init_cfg=None,
            ),
            positional_encoding=dict(num_feats=head_dim // 2, normalize=True),
            init_cfg=None,
        ),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=head_dim // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=3,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=head_dim, num_heads=4, attn_drop=0.0, proj_drop=0.0, batch_first=True
                ),
                cross_attn_cfg=dict(
                    embed_dims=head_dim, num_heads=4, attn_drop=0.0, proj_drop=0.0, batch_first=True
                ),
                ffn_cfg=dict(
                    embed_dims=head_dim,
                    feedforward_channels=4 * head_dim,
                    num_fcs=2,
                    act_cfg=dict(type="ReLU", inplace=True),
                    ffn_drop=0.0,
                    add_identity=True,
                ),
            ),
            init_cfg=None,
        ),
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
        train_cfg=dict(
            num_points=32 * 32,  # one point per mask-feature pixel of a 128 crop (EVA-01: 112^2 at 896)
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
    auxiliary_head=None,
)
# Optimizer (AdamW 1e-3, layer decay 0.9, gradient clipping 1.0), schedule and test protocol (slide
# 128 / 96) are the toy UperNet's.
custom_hooks = [dict(type="SegmentorCheckpointHook")]
