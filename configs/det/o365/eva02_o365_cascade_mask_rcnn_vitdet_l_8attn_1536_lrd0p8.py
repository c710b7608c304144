"""eva02_L_{m38m,in21k}_to_o365: EVA-02 L Objects365 v2 intermediate fine-tuning, LSJ 1536.

Box-only Cascade R-CNN (no mask head), 365 classes, trained on train + val of Objects365 v2.
Init: train.init_checkpoint=eva02_L_pt_m38m_p14to16.pt (or eva02_L_pt_in21k_p14to16.pt)
"""

from det.lazy_data import lsj_dataloader
from det.recipe import set_eva02_vit, set_multistep_schedule

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

set_eva02_vit(
    model, optimizer, "L", img_size=1536, window_size=16, global_blocks=[2, 5, 8, 11, 14, 17, 20, 23],
    drop_path_rate=0.4, lr=6e-5, lr_decay_rate=0.8,
)  # fmt: skip
test.aug.min_sizes = [1024, 1280, 1536]  # test-time augmentation: views fit the 1536 square
test.aug.max_size = 1536
set_multistep_schedule(train, lr_multiplier, max_iter=400000, warmup_iters=5000)
dataloader.test.num_workers = 0
dataloader.train.total_batch_size = 160
train.checkpointer.period = 2500
train.eval_period = 10000
