"""eva02_L_lvis_bsl: EVA-02 L, LVIS v1, LSJ 1024 (55.3 box / 48.6 mask AP released).

Init: train.init_checkpoint=eva02_L_pt_in21k_p14to16.pt
"""

from det.lazy_data import to_lvis
from det.recipe import set_multistep_schedule

from ..coco.eva02_coco_cascade_mask_rcnn_vitdet_l_4attn_1024_lrd0p8 import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    test,
    train,
)

to_lvis(dataloader, model)  # RFS 0.001, sigmoid CE + federated loss, 1203 classes, 300 dets, thresh 0.02

optimizer.lr = 1e-4
set_multistep_schedule(train, lr_multiplier, max_iter=40000, warmup_iters=1000)
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128
train.eval_period = 2500
train.checkpointer.period = 2500
