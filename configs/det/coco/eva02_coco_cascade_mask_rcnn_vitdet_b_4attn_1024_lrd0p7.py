"""eva02_B_coco_bsl: EVA-02 B, COCO, LSJ 1024, 4 global blocks (55.5 box / 47.1 mask AP released).

Init: train.init_checkpoint=eva02_B_pt_in21k_p14to16.pt
"""

from functools import partial

from det.lr_decay import eva02_lr_factor

from ..common.cascade_mask_rcnn_eva02 import dataloader, lr_multiplier, model, optimizer, test, train  # noqa: F401

model.backbone.net.img_size = 1024
model.backbone.net.patch_size = 16
model.backbone.net.window_size = 16
model.backbone.net.embed_dim = 768
model.backbone.net.depth = 12
model.backbone.net.num_heads = 12
model.backbone.net.mlp_ratio = 4 * 2 / 3
model.backbone.net.use_act_checkpoint = False
model.backbone.net.drop_path_rate = 0.1
# 2, 5, 8, 11 global attention
model.backbone.net.window_block_indexes = [0, 1, 3, 4, 6, 7, 9, 10]

optimizer.lr = 5e-5
optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=0.7, num_layers=12)
optimizer.params.overrides = {}
optimizer.params.weight_decay_norm = None

train.max_iter = 60000
lr_multiplier.scheduler.milestones = [train.max_iter * 8 // 10, train.max_iter * 9 // 10]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 1000 / train.max_iter

dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128
