"""eva02_L_lvis_sys: EVA-02 L, LVIS v1, LSJ 1536, window 32, 8 global blocks (60.1 box / 53.5 mask AP).

Evaluated as released: class-wise linear soft-NMS (IoU 0.6, every detection above 1e-3 kept) and
maskness 0.5 for both tasks; the LVIS evaluator keeps the best 300 per image.
Init: train.init_checkpoint=eva02_L_pt_in21k_p14to16.pt
"""

from det.lazy_data import to_lvis
from det.recipe import set_multistep_schedule, use_released_soft_nms

from ..coco.eva02_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

to_lvis(dataloader, model)  # RFS 0.001, sigmoid CE + federated loss, 1203 classes, 300 dets, thresh 0.02
use_released_soft_nms(model, score_thresh=None)  # keep the LVIS threshold 0.02
model.roi_heads.maskness_thresh = 0.5

optimizer.lr = 1e-4
set_multistep_schedule(train, lr_multiplier, max_iter=40000, warmup_iters=1000)
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128
train.eval_period = 2500
train.checkpointer.period = 2500
