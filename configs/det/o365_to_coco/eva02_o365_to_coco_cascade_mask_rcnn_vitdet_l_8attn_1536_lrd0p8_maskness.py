"""Mask-AP evaluation of eva02_o365_to_coco_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8: + maskness 0.5."""

from .eva02_o365_to_coco_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

model.roi_heads.maskness_thresh = 0.5
