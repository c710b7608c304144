"""eva02_B_coco_sys: EVA-02 B, COCO, LSJ 1536, window 32, 6 global blocks (58.9 box AP released).

Evaluation as released for the box AP: class-wise linear soft-NMS (IoU 0.6), score threshold 0,
every detection above 1e-3 kept (COCOeval then uses the best 100 per image and class).
For the mask AP (50.7) use the ``_maskness`` variant of this config.
Init: train.init_checkpoint=eva02_B_pt_in21k_p14to16.pt
"""

from det.lazy_data import lsj_dataloader
from det.recipe import set_eva02_vit, set_multistep_schedule, use_released_soft_nms

from ..common.cascade_mask_rcnn_eva02 import lr_multiplier, model, optimizer, test, train  # noqa: F401

dataloader = lsj_dataloader(1536, "coco_2017_train", "coco_2017_val")
set_eva02_vit(
    model, optimizer, "B", img_size=1536, window_size=32, global_blocks=[1, 3, 5, 7, 9, 11],
    drop_path_rate=0.1, lr=5e-5, lr_decay_rate=0.7,
)  # fmt: skip
test.aug.min_sizes = [1024, 1280, 1536]  # test-time augmentation: views fit the 1536 square
test.aug.max_size = 1536
set_multistep_schedule(train, lr_multiplier, max_iter=60000, warmup_iters=1000)
use_released_soft_nms(model, score_thresh=0.0)
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 128
