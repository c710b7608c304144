"""eva02_L_coco_{det,seg}_sys_o365: EVA-02 L, Objects365 -> COCO, LSJ 1536 (64.1 box / 55.4 mask AP).

Model EMA (0.9999) during training, evaluated with the EMA weights; constant learning rate after
a 1% warmup. Box AP as released: class-wise linear soft-NMS (IoU 0.6), score threshold 0. For the
mask AP use the ``_maskness`` variant. The released det and seg numbers come from two checkpoints of
the same run.
Init: train.init_checkpoint=eva02_L_m38m_to_o365.pth
"""

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler

from det.lazy_data import lsj_dataloader
from det.recipe import set_eva02_vit, use_released_soft_nms

from ..common.cascade_mask_rcnn_eva02 import model, optimizer, test, train  # noqa: F401

dataloader = lsj_dataloader(1536, "coco_2017_train", "coco_2017_val")
set_eva02_vit(
    model, optimizer, "L", img_size=1536, window_size=16, global_blocks=[2, 5, 8, 11, 14, 17, 20, 23],
    drop_path_rate=0.3, lr=4e-5, lr_decay_rate=0.8, use_act_checkpoint=True,
)  # fmt: skip
test.aug.min_sizes = [1024, 1280, 1536]  # test-time augmentation: views fit the 1536 square
test.aug.max_size = 1536
use_released_soft_nms(model, score_thresh=0.0)

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
