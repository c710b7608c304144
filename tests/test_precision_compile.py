"""Compile and bf16 switches of the three adapters: compiled blocks equal eager and reuse their
graphs at new sizes; bf16 autocast really runs in bf16 and stays close to fp32."""

from __future__ import annotations

import os.path as osp

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner.amp import autocast as mmengine_autocast
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import seg  # noqa: F401
from backbone import EVA02ViT
from det.engine import AutocastModel, inference_autocast
from pretraining.engine import build_models
from pretraining.recipes import PretrainConfig
from seg.launch import cpu_fallback_optim

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _record_linear_dtype(model: torch.nn.Module) -> set[torch.dtype]:
    """Output dtypes of the model's nn.Linear layers, as they run."""
    seen: set[torch.dtype] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    return seen


def test_compiled_blocks_equal_eager_and_new_sizes_reuse_the_graphs():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    kw = dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, use_cls_token=False,
              window_size=2, window_block_indexes=[0])  # fmt: skip
    torch.manual_seed(0)
    eager = EVA02ViT(**kw).eval()
    # aot_eager: dynamo's capture and AOT autograd without inductor's C++ build (minutes on 2 cores)
    compiled = EVA02ViT(**kw, compile_blocks={"backend": "aot_eager"}).eval()
    compiled.load_state_dict(eager.state_dict())  # parameter names unchanged by compilation
    graphs = []
    with torch.no_grad():
        for h, w in ((64, 64), (96, 64), (128, 96)):
            x = torch.randn(1, 3, h, w)
            assert _rel(compiled(x)["last_feat"], eager(x)["last_feat"]) < 1e-5
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and graphs[2] == graphs[1], f"graphs compiled after each size: {graphs}"


def _toy_det_model():
    cfg = LazyConfig.load(osp.join(ROOT, "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"))
    cfg.model.backbone.net.depth = 2
    cfg.model.backbone.net.window_block_indexes = [0]
    cfg.train.device = "cpu"
    torch.manual_seed(0)
    return cfg, instantiate(cfg.model)


def _det_batch():
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 255, (3, 128, 160), generator=g, dtype=torch.uint8)
    gt = Instances((128, 160))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 70.0, 80.0], [80.0, 40.0, 150.0, 110.0]]))
    gt.gt_classes = torch.tensor([0, 3])
    masks = torch.zeros(2, 128, 160, dtype=torch.bool)
    masks[0, 12:80, 10:70] = True
    masks[1, 40:110, 80:150] = True
    gt.gt_masks = BitMasks(masks)
    return [{"image": image, "instances": gt, "height": 128, "width": 160}]


def test_det_bf16_training_and_inference_on_cpu():
    cfg, model = _toy_det_model()
    model.train()
    batch = _det_batch()
    with EventStorage():
        torch.manual_seed(5)
        fp32 = model(batch)
        seen = _record_linear_dtype(model.backbone)
        torch.manual_seed(5)
        bf16 = AutocastModel(model, "cpu", torch.bfloat16)(batch)
    assert seen == {torch.bfloat16}
    assert all(torch.isfinite(v) for v in bf16.values())
    # Anchors are labelled from the ground truth alone, so the RPN samples the same anchors.
    for key in ("loss_rpn_cls", "loss_rpn_loc"):
        assert abs(float(bf16[key]) - float(fp32[key])) <= 0.05 * float(fp32[key]) + 1e-3, key

    model.eval()
    images = model.preprocess_image(batch)
    with torch.no_grad():
        ref = model.backbone(images.tensor)
        cfg.test.amp.enabled = True
        runner = inference_autocast(cfg, model, "cpu")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.backbone(images.tensor)
        seen.clear()
        out = runner(batch)[0]["instances"]
    assert seen == {torch.bfloat16}
    for name in ref:
        assert 0 < _rel(low[name], ref[name]) < 0.05, name  # rounded to bf16 somewhere, yet close
    # what the evaluators read: finite fp32 numbers (numpy has no bfloat16)
    assert out.pred_boxes.tensor.dtype == torch.float32 and out.scores.dtype == torch.float32
    assert torch.isfinite(out.pred_boxes.tensor).all() and len(out) > 0
    cfg.test.amp.precision = "float16"
    with pytest.raises(ValueError, match="bfloat16"):
        inference_autocast(cfg, model, "cpu")


def _seg_batch(n: int, size: int, num_classes: int):
    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.integers(0, 255, (3, size, size), dtype=np.uint8)) for _ in range(n)]
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=torch.from_numpy(rng.integers(0, num_classes, (1, size, size))))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def test_seg_bf16_optim_wrapper_and_test_loop_autocast_on_cpu():
    init_default_scope("mmseg")
    cfg = Config.fromfile(osp.join(ROOT, "configs/seg/toy/upernet_eva02_tiny_toy.py"))
    cfg.model.backbone.compile_blocks = False
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.dtype = "bfloat16"
    cpu_fallback_optim(cfg)
    assert cfg.optim_wrapper.type == "CPUAutocastOptimWrapper"
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    size, k = 64, cfg.model.decode_head.num_classes
    batch = _seg_batch(2, size, k)
    model.train()
    fp32_loss, _ = model.parse_losses(model(**model.data_preprocessor(batch, True), mode="loss"))
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    seen = _record_linear_dtype(model.backbone)
    losses = model.train_step(batch, optim)
    assert seen == {torch.bfloat16}
    assert all(torch.isfinite(v) for v in losses.values())
    assert abs(float(losses["loss"]) - float(fp32_loss)) < 0.02 * float(fp32_loss)

    # evaluation: mmengine's ValLoop/TestLoop(fp16=True) autocasts, to bfloat16 on CPU
    model.eval()
    with torch.no_grad():
        ref = model.test_step(_seg_batch(1, size, k))[0]
        with mmengine_autocast(enabled=True):
            low = model.test_step(_seg_batch(1, size, k))[0]
    agree = (low.pred_sem_seg.data == ref.pred_sem_seg.data).float().mean()
    assert torch.isfinite(low.seg_logits.data).all() and agree > 0.95


def test_pretrain_compile_flag_compiles_the_student_blocks():
    cfg = PretrainConfig(
        model="eva02_tiny", model_overrides={"depth": 2}, img_size=56, teacher="tiny", compile=True
    )
    student, _ = build_models(cfg, torch.device("cpu"))
    assert all(blk._compiled_call_impl is not None for blk in student.vit.blocks)
    plain, _ = build_models(PretrainConfig(**{**cfg.__dict__, "compile": False}), torch.device("cpu"))
    assert torch.equal(next(iter(plain.state_dict().values())), next(iter(student.state_dict().values())))
