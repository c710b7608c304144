"""eva02_B_coco_bsl: EVA-02 B, COCO, LSJ 1024, 4 global blocks (55.5 box / 47.1 mask AP released).

Init: train.init_checkpoint=eva02_B_pt_in21k_p14to16.pt
"""

from det.recipe import set_eva02_vit, set_multistep_schedule

from ..common.cascade_mask_rcnn_eva02 import dataloader, lr_multiplier, model, optimizer, test, train  # noqa: F401

set_eva02_vit(
    model, optimizer, "B", img_size=1024, window_size=16, global_blocks=[2, 5, 8, 11],
    drop_path_rate=0.1, lr=5e-5, lr_decay_rate=0.7,
)  # fmt: skip
set_multistep_schedule(train, lr_multiplier, max_iter=60000, warmup_iters=1000)
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128
