"""Mask-AP evaluation of the b_6attn_win32_1536_lrd0p7 COCO config: soft-NMS plus maskness 0.5."""

from .eva02_coco_cascade_mask_rcnn_vitdet_b_6attn_win32_1536_lrd0p7 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

model.roi_heads.maskness_thresh = 0.5
