"""eva02_B_lvis_bsl: EVA-02 B, LVIS v1, LSJ 1024 (47.1 box / 41.4 mask AP released).

Init: train.init_checkpoint=eva02_B_pt_in21k_p14to16.pt
"""

from det.lazy_data import to_lvis
from det.recipe import set_multistep_schedule

from ..coco.eva02_coco_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

to_lvis(dataloader, model)  # RFS 0.001, sigmoid CE + federated loss, 1203 classes, 300 dets, thresh 0.02

optimizer.lr = 1e-4
set_multistep_schedule(train, lr_multiplier, max_iter=50000, warmup_iters=1000)
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128
train.eval_period = 2500
train.checkpointer.period = 2500
