# 80k-iteration schedule (EVA-02 L). The optimizer itself is set per config (AdamW + layer decay).
# Linear warm-up (1500 iters from 1e-6 x lr) multiplied with a linear (power 1) decay to 0 over the
# whole run: overlapping mmengine schedulers compose multiplicatively, which is exactly mmcv 1.x's
# `poly` policy with `warmup='linear'` used by the release. mmengine's linear/poly schedulers reach
# their end value at step `end - 1`, hence `end` = 1501 and max_iters + 1 to match mmcv's formulas
# (warm-up factor 1 - (1 - i / 1500) * (1 - 1e-6), poly factor 1 - i / max_iters) exactly.
max_iters = 80000
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1501),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=1000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(
        type="CheckpointHook", by_epoch=False, interval=1000, max_keep_ckpts=10, save_best="mIoU"
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
