"""eva02_L_lvis_sys_o365: EVA-02 L, Objects365 -> LVIS v1, LSJ 1536 (65.2 box / 57.3 mask AP released).

Same recipe as Objects365 -> COCO (EMA 0.9999, constant lr, lr 4e-5) with the LVIS changes, 70k
iterations. Evaluated as released: EMA weights, class-wise linear soft-NMS (IoU 0.6, every detection
above 1e-3 kept), maskness 0.5 on all of them, then the LVIS evaluator keeps the best 1000 per image.
Init: train.init_checkpoint=eva02_L_in21k_to_o365.pth
"""

from det.lazy_data import to_lvis

from ..o365_to_coco.eva02_o365_to_coco_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

to_lvis(dataloader, model, eval_max_dets=1000)  # soft-NMS keeps all; the evaluator caps at 1000

model.roi_heads.override_score_thresh = None  # keep the LVIS threshold 0.02
model.roi_heads.maskness_thresh = 0.5

dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 64

train.max_iter = 70000
train.eval_period = 5000
train.checkpointer.period = 5000
