"""eva02_L_coco_sys: EVA-02 L, COCO, LSJ 1536, window 32, 8 global blocks (62.3 box AP released).

Evaluation as released for the box AP: class-wise linear soft-NMS (IoU 0.6), score threshold 0.
For the mask AP (53.8) use the ``_maskness`` variant of this config.
Init: train.init_checkpoint=eva02_L_pt_m38m_p14to16.pt
"""

from functools import partial

from det.lazy_data import lsj_dataloader
from det.lr_decay import eva02_lr_factor

from ..common.cascade_mask_rcnn_eva02 import lr_multiplier, model, optimizer, test, train  # noqa: F401

dataloader = lsj_dataloader(1536, "coco_2017_train", "coco_2017_val")

model.backbone.net.img_size = 1536
model.backbone.net.patch_size = 16
model.backbone.net.window_size = 32
model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.mlp_ratio = 4 * 2 / 3
model.backbone.net.use_act_checkpoint = True
model.backbone.net.drop_path_rate = 0.4
# 2, 5, 8, 11, 14, 17, 20, 23 global attention
model.backbone.net.window_block_indexes = [i for i in range(24) if i % 3 != 2]

model.roi_heads.use_soft_nms = True
model.roi_heads.class_wise = True
model.roi_heads.method = "linear"
model.roi_heads.iou_threshold = 0.6
model.roi_heads.override_score_thresh = 0.0

optimizer.lr = 5e-5
optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=0.8, num_layers=24)
optimizer.params.overrides = {}
optimizer.params.weight_decay_norm = None

train.max_iter = 60000
lr_multiplier.scheduler.milestones = [train.max_iter * 8 // 10, train.max_iter * 9 // 10]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 1000 / train.max_iter

dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128
