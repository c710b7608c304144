"""eva02_L_{m38m,in21k}_to_o365: EVA-02 L Objects365 v2 intermediate fine-tuning, LSJ 1536.

Box-only Cascade R-CNN (no mask head), 365 classes, trained on train + val of Objects365 v2.
Init: train.init_checkpoint=eva02_L_pt_m38m_p14to16.pt (or eva02_L_pt_in21k_p14to16.pt)
"""

from functools import partial

from det.lazy_data import lsj_dataloader
from det.lr_decay import eva02_lr_factor

from ..common.cascade_mask_rcnn_eva02 import lr_multiplier, model, optimizer, test, train  # noqa: F401

dataloader = lsj_dataloader(
    1536,
    ["objects365_v2_train", "objects365_v2_val"],
    "objects365_v2_val",
    use_instance_mask=False,
    recompute_boxes=False,
)

model.roi_heads.mask_in_features = None
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
model.roi_heads.num_classes = 365

model.backbone.net.img_size = 1536
model.backbone.net.patch_size = 16
model.backbone.net.window_size = 16
model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.mlp_ratio = 4 * 2 / 3
model.backbone.net.use_act_checkpoint = False
model.backbone.net.drop_path_rate = 0.4
# 2, 5, 8, 11, 14, 17, 20, 23 global attention
model.backbone.net.window_block_indexes = [i for i in range(24) if i % 3 != 2]

optimizer.lr = 6e-5
optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=0.8, num_layers=24)
optimizer.params.overrides = {}
optimizer.params.weight_decay_norm = None

train.max_iter = 400000
lr_multiplier.scheduler.milestones = [train.max_iter * 8 // 10, train.max_iter * 9 // 10]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 5000 / train.max_iter

dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 160

train.checkpointer.period = 2500
train.eval_period = 10000
