"""Each released EVA-02 detection row: our config's hyper-parameters against the release's values.

Values transcribed from the released lazy configs (projects/ViTDet/configs/eva2_*) and the
evaluation commands of the EVA-02 detection README (soft-NMS, maskness, EMA, LVIS max dets), and
the square padding every released row set (``model.backbone.square_pad = img_size``).
"""

from pathlib import Path

import pytest
from detectron2.config import LazyConfig
from omegaconf import OmegaConf

from det.tta import row_detection_cap

ROOT = Path(__file__).resolve().parents[1] / "configs/det"
B = dict(embed_dim=768, depth=12, num_heads=12, decay=0.7)
L = dict(embed_dim=1024, depth=24, num_heads=16, decay=0.8)
EVERY_THIRD = [2, 5, 8, 11, 14, 17, 20, 23]
SOFT_NMS = dict(use_soft_nms=True, method="linear", iou_threshold=0.6, class_wise=True)

RELEASED = {
    "coco/eva02_coco_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7": dict(
        B, img=1024, window=16, glob=[2, 5, 8, 11], dpr=0.1, ckpt=False, lr=5e-5, iters=60000, batch=128
    ),
    "coco/eva02_coco_cascade_mask_rcnn_vitdet_b_6attn_win32_1536_lrd0p7": dict(
        B,
        img=1536,
        window=32,
        glob=[1, 3, 5, 7, 9, 11],
        dpr=0.1,
        ckpt=False,
        lr=5e-5,
        iters=60000,
        batch=128,
        nms=dict(SOFT_NMS, override_score_thresh=0.0),
    ),
    "coco/eva02_coco_cascade_mask_rcnn_vitdet_l_4attn_1024_lrd0p8": dict(
        L, img=1024, window=16, glob=[5, 11, 17, 23], dpr=0.4, ckpt=False, lr=6e-5, iters=60000, batch=144
    ),
    "coco/eva02_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8": dict(
        L,
        img=1536,
        window=32,
        glob=EVERY_THIRD,
        dpr=0.4,
        ckpt=True,
        lr=5e-5,
        iters=60000,
        batch=128,
        nms=dict(SOFT_NMS, override_score_thresh=0.0),
    ),
    "lvis/eva02_lvis_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7": dict(
        B,
        img=1024,
        window=16,
        glob=[2, 5, 8, 11],
        dpr=0.1,
        ckpt=False,
        lr=1e-4,
        iters=50000,
        batch=128,
        classes=1203,
    ),
    "lvis/eva02_lvis_cascade_mask_rcnn_vitdet_l_4attn_1024_lrd0p8": dict(
        L,
        img=1024,
        window=16,
        glob=[5, 11, 17, 23],
        dpr=0.4,
        ckpt=False,
        lr=1e-4,
        iters=40000,
        batch=128,
        classes=1203,
    ),
    "lvis/eva02_lvis_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8": dict(
        L,
        img=1536,
        window=32,
        glob=EVERY_THIRD,
        dpr=0.4,
        ckpt=True,
        lr=1e-4,
        iters=40000,
        batch=128,
        classes=1203,
        nms=dict(SOFT_NMS, override_score_thresh=None, maskness_thresh=0.5),
    ),
    "o365/eva02_o365_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8": dict(
        L,
        img=1536,
        window=16,
        glob=EVERY_THIRD,
        dpr=0.4,
        ckpt=False,
        lr=6e-5,
        iters=400000,
        batch=160,
        classes=365,
        mask=False,
        warmup=5000,
    ),
    "o365_to_coco/eva02_o365_to_coco_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8": dict(
        L,
        img=1536,
        window=16,
        glob=EVERY_THIRD,
        dpr=0.3,
        ckpt=True,
        lr=4e-5,
        iters=40000,
        batch=64,
        ema=True,
        constant=True,
        nms=dict(SOFT_NMS, override_score_thresh=0.0),
    ),
    "o365_to_lvis/eva02_o365_to_lvis_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8": dict(
        L,
        img=1536,
        window=16,
        glob=EVERY_THIRD,
        dpr=0.3,
        ckpt=True,
        lr=4e-5,
        iters=70000,
        batch=64,
        classes=1203,
        ema=True,
        constant=True,
        eval_dets=1000,
        nms=dict(SOFT_NMS, override_score_thresh=None, maskness_thresh=0.5),
    ),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_hyper_parameters(name):
    cfg, want = LazyConfig.load(str(ROOT / f"{name}.py")), RELEASED[name]
    net = cfg.model.backbone.net
    assert (net.embed_dim, net.depth, net.num_heads) == (want["embed_dim"], want["depth"], want["num_heads"])
    assert (net.img_size, net.patch_size, net.window_size) == (want["img"], 16, want["window"])
    assert cfg.model.backbone.square_pad == want["img"]  # every image padded to the img_size square
    assert net.mlp_ratio == pytest.approx(4 * 2 / 3) and net.sub_ln is True
    assert sorted(set(range(net.depth)) - set(net.window_block_indexes)) == want["glob"]
    assert (net.drop_path_rate, net.use_act_checkpoint) == (want["dpr"], want["ckpt"])

    opt = cfg.optimizer
    assert (opt.lr, tuple(opt.betas), opt.weight_decay) == (want["lr"], (0.9, 0.999), 0.1)
    assert opt.params.lr_factor_func.keywords == {"lr_decay_rate": want["decay"], "num_layers": want["depth"]}
    assert opt.params.weight_decay_norm is None and opt.params.overrides == {}

    assert cfg.train.max_iter == want["iters"] and cfg.dataloader.train.total_batch_size == want["batch"]
    sched = cfg.lr_multiplier
    assert sched.warmup_factor == 0.001
    if want.get("constant"):
        assert (sched.scheduler.start_value, sched.scheduler.end_value, sched.warmup_length) == (1, 1, 0.01)
    else:
        iters = want["iters"]
        assert list(sched.scheduler["values"]) == [1.0, 0.1, 0.01]
        assert list(sched.scheduler.milestones) == [iters * 8 // 10, iters * 9 // 10]
        assert sched.scheduler.num_updates == iters
        assert sched.warmup_length == pytest.approx(want.get("warmup", 1000) / iters)
    ema = cfg.train.model_ema
    assert ema.enabled == want.get("ema", False)
    if want.get("ema"):
        assert ema.decay == 0.9999 and ema.use_ema_weights_for_eval_only is True

    heads = cfg.model.roi_heads
    assert heads.num_classes == want.get("classes", 80)
    assert (heads.mask_head is not None) == want.get("mask", True)
    nms = want.get("nms", dict(use_soft_nms=False))
    assert {k: heads[k] for k in nms} == nms
    if "maskness_thresh" not in nms:
        assert heads.maskness_thresh is None
    # Caps: no per-image top-k of our own (soft-NMS keeps every detection above 1e-3, NMS the
    # predictors' 100 / 300); the evaluator caps: COCOeval maxDets 100, LVIS 300, O365 -> LVIS 1000.
    assert heads.test_topk_per_image is None
    lvis = want.get("classes") == 1203
    assert {p.test_topk_per_image for p in heads.box_predictors} == {300 if lvis else 100}
    assert cfg.dataloader.evaluator.get("max_dets_per_image") == (
        want.get("eval_dets", 300) if lvis else None
    )
    assert row_detection_cap(cfg) == (want.get("eval_dets", 300) if lvis else 100)
    assert (
        cfg.test.aug.max_size <= cfg.model.backbone.square_pad and cfg.test.aug.detections_per_image is None
    )
    if lvis:
        sampler = cfg.dataloader.train.sampler
        assert sampler.repeat_factors.repeat_thresh == 0.001
        for p in heads.box_predictors:
            assert (p.use_sigmoid_ce, p.use_fed_loss, p.test_score_thresh, p.test_topk_per_image) == (
                True,
                True,
                0.02,
                300,
            )
        assert cfg.dataloader.evaluator.max_dets_per_image == want.get("eval_dets", 300)
    train_augs = cfg.dataloader.train.mapper.augmentations
    resize = next(a for a in train_augs if "ResizeScale" in str(a._target_))
    assert (resize.min_scale, resize.max_scale, resize.target_height) == (0.1, 2.0, want["img"])


def test_recipe_rejects_unknown_size_and_blocks():
    from det.recipe import set_eva02_vit

    cfg = LazyConfig.load(str(ROOT / "coco/eva02_coco_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7.py"))
    common = dict(img_size=1024, window_size=16, drop_path_rate=0.1, lr=1e-4, lr_decay_rate=0.7)
    with pytest.raises(ValueError, match="unknown EVA-02 size 'H'"):
        set_eva02_vit(cfg.model, cfg.optimizer, "H", global_blocks=[2], **common)
    with pytest.raises(ValueError, match=r"global blocks \[12\] out of range for EVA-02 B"):
        set_eva02_vit(cfg.model, cfg.optimizer, "B", global_blocks=[2, 12], **common)


def test_toy_config_pads_to_its_square():
    cfg = LazyConfig.load(str(ROOT / "toy/cascade_mask_rcnn_eva02_tiny_toy.py"))
    assert cfg.model.backbone.square_pad == cfg.model.backbone.net.img_size == 256
    assert cfg.test.aug.max_size <= 256


@pytest.mark.parametrize("name", sorted(p.stem for p in ROOT.glob("*/*_maskness.py")))
def test_maskness_variant_is_its_row_plus_maskness(name):
    variant = LazyConfig.load(str(next(ROOT.glob(f"*/{name}.py"))))
    row = LazyConfig.load(str(next(ROOT.glob(f"*/{name.removesuffix('_maskness')}.py"))))
    assert variant.model.roi_heads.maskness_thresh == 0.5 and row.model.roi_heads.maskness_thresh is None
    variant.model.roi_heads.maskness_thresh = None
    for part in ("model", "dataloader", "train", "test", "lr_multiplier"):
        assert OmegaConf.to_container(variant[part]) == OmegaConf.to_container(row[part]), part
