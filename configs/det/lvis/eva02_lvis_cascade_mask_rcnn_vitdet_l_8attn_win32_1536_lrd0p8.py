"""eva02_L_lvis_sys: EVA-02 L, LVIS v1, LSJ 1536, window 32, 8 global blocks (60.1 box / 53.5 mask AP).

Evaluated as released: class-wise linear soft-NMS (IoU 0.6) and maskness 0.5 for both tasks.
Init: train.init_checkpoint=eva02_L_pt_in21k_p14to16.pt
"""

from det.lazy_data import to_lvis

from ..coco.eva02_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

to_lvis(dataloader, model)  # RFS 0.001, sigmoid CE + federated loss, 1203 classes, 300 dets, thresh 0.02

model.roi_heads.use_soft_nms = True
model.roi_heads.class_wise = True
model.roi_heads.method = "linear"
model.roi_heads.iou_threshold = 0.6
model.roi_heads.override_score_thresh = None  # keep the LVIS threshold 0.02
model.roi_heads.maskness_thresh = 0.5

optimizer.lr = 1e-4

train.max_iter = 40000
lr_multiplier.scheduler.milestones = [train.max_iter * 8 // 10, train.max_iter * 9 // 10]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 1000 / train.max_iter

dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128

train.eval_period = 2500
train.checkpointer.period = 2500
