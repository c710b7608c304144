"""eva02_L_coco_{det,seg}_sys_o365: EVA-02 L, Objects365 -> COCO, LSJ 1536 (64.1 box / 55.4 mask AP).

Model EMA (0.9999) during training, evaluated with the EMA weights; constant learning rate after
a 1% warmup. Box AP as released: class-wise linear soft-NMS (IoU 0.6), score threshold 0. For the
mask AP use the ``_maskness`` variant. The released det and seg numbers come from two checkpoints of
the same run.
Init: train.init_checkpoint=eva02_L_m38m_to_o365.pth
"""

from functools import partial

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from det.lazy_data import lsj_dataloader
from det.lr_decay import eva02_lr_factor

from ..common.cascade_mask_rcnn_eva02 import model, optimizer, test, train  # noqa: F401

dataloader = lsj_dataloader(1536, "coco_2017_train", "coco_2017_val")

model.backbone.net.img_size = 1536
model.backbone.net.patch_size = 16
model.backbone.net.window_size = 16
model.backbone.net.embed_dim = 1024
model.backbone.net.depth = 24
model.backbone.net.num_heads = 16
model.backbone.net.mlp_ratio = 4 * 2 / 3
model.backbone.net.use_act_checkpoint = True
model.backbone.net.drop_path_rate = 0.3
# 2, 5, 8, 11, 14, 17, 20, 23 global attention
model.backbone.net.window_block_indexes = [i for i in range(24) if i % 3 != 2]

model.roi_heads.use_soft_nms = True
model.roi_heads.class_wise = True
model.roi_heads.method = "linear"
model.roi_heads.iou_threshold = 0.6
model.roi_heads.override_score_thresh = 0.0

optimizer.lr = 4e-5
optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=0.8, num_layers=24)
optimizer.params.overrides = {}
optimizer.params.weight_decay_norm = None

train.max_iter = 40000

train.model_ema.enabled = True
train.model_ema.device = "cuda"
train.model_ema.decay = 0.9999
train.model_ema.use_ema_weights_for_eval_only = True

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1, end_value=1),  # constant
    warmup_length=0.01,
    warmup_factor=0.001,
)

dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 64
