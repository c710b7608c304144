"""eva02_L_coco_bsl: EVA-02 L, COCO, LSJ 1024, 4 global blocks (59.2 box / 50.8 mask AP released).

Init: train.init_checkpoint=eva02_L_pt_m38m_p14to16.pt
"""

from det.recipe import set_eva02_vit, set_multistep_schedule

from ..common.cascade_mask_rcnn_eva02 import dataloader, lr_multiplier, model, optimizer, test, train  # noqa: F401

set_eva02_vit(
    model, optimizer, "L", img_size=1024, window_size=16, global_blocks=[5, 11, 17, 23],
    drop_path_rate=0.4, lr=6e-5, lr_decay_rate=0.8,
)  # fmt: skip
set_multistep_schedule(train, lr_multiplier, max_iter=60000, warmup_iters=1000)
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 144
