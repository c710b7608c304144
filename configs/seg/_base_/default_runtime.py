# mmseg 1.x runtime shared by every EVA-02 segmentation config.
default_scope = "mmseg"
# Registers the EVA02 backbone, the layer-decay optimizer constructor, the multi-scale test resize,
# the CPU-capable DDP wrapper and the safe-loading allow-list for mmengine checkpoints.
custom_imports = dict(imports=["seg"], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,  # the released runs were deterministic (see randomness)
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
log_processor = dict(by_epoch=False)
log_level = "INFO"
load_from = None
resume = False
tta_model = dict(type="SegTTAModel")
# As the released runs (their logs: "Set random seed to 0, deterministic: True"). mmengine turns this
# into torch.use_deterministic_algorithms(True); our tools relax that to warn_only on CUDA, where
# some kernels (bilinear upsampling backward) have no deterministic version (seg.launch).
randomness = dict(seed=0, deterministic=True)
