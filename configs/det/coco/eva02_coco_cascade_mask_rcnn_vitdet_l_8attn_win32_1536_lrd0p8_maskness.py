"""Mask-AP evaluation of the l_8attn_win32_1536_lrd0p8 COCO config: soft-NMS plus maskness 0.5."""

from .eva02_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

model.roi_heads.maskness_thresh = 0.5
