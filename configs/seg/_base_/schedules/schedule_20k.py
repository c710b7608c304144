# 20k-iteration fine-tuning schedule (EVA-01 ADE20K Mask2Former from the COCO-Stuff model,
# configs/ade20k/eva_mask2former_896_20k_coco164k2ade20k_ss.py): linear warm-up over 500 iterations
# from 1e-6 x lr multiplied with a linear (power 1) decay to 0, i.e. mmcv 1.x's `poly` with
# `warmup='linear'`, written as in schedule_60k.py (end = warm-up + 1 and max_iters + 1, see there).
max_iters = 20000
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=501),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=1000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    # EVA-01: checkpoint and evaluate every 1000 iterations, keep 10, remember the best mIoU
    checkpoint=dict(
        type="CheckpointHook", by_epoch=False, interval=1000, max_keep_ckpts=10, save_best="mIoU"
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
