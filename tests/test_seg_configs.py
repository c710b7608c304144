"""Every segmentation config builds and steps; schedules, TTA resize, slide/whole, IoU by hand."""

from __future__ import annotations

import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.registry import MODELS, PARAM_SCHEDULERS, TRANSFORMS
from mmseg.structures import SegDataSample

import seg  # noqa: F401
from seg.launch import cpu_fallback_optim

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, "configs/seg/eva02/*.py"))) + [
    osp.join(ROOT, "configs/seg/toy/upernet_eva02_tiny_toy.py")
]
init_default_scope("mmseg")

# values of the released configs (EVA-02/seg/configs/eva02/upernet/*.py)
RELEASED = {
    "upernet_eva02_base_12_512_slide_60k": dict(
        arch="eva02_base",
        img=512,
        out=(3, 5, 7, 11),
        dpr=0.15,
        ch=768,
        aux_ch=256,
        lr=6e-5,
        decay=0.85,
        layers=12,
        iters=60000,
        batch=8,
        stride=341,
        classes=150,
        dataset="ADE20KDataset",
    ),
    "upernet_eva02_large_24_512_slide_80k": dict(
        arch="eva02_large",
        img=512,
        out=(7, 11, 15, 23),
        dpr=0.2,
        ch=1024,
        aux_ch=256,
        lr=4e-5,
        decay=0.9,
        layers=24,
        iters=80000,
        batch=2,
        stride=341,
        classes=150,
        dataset="ADE20KDataset",
    ),
    "upernet_eva02_large_24_512_slide_ms_eval": dict(
        arch="eva02_large",
        img=512,
        out=(7, 11, 15, 23),
        dpr=0.2,
        ch=1024,
        aux_ch=256,
        lr=4e-5,
        decay=0.9,
        layers=24,
        iters=80000,
        batch=2,
        stride=341,
        classes=150,
        dataset="ADE20KDataset",
    ),
    "upernetpro_eva02_large_24_640_slide_80k": dict(
        arch="eva02_large",
        img=640,
        out=(7, 11, 15, 23),
        dpr=0.2,
        ch=1536,
        aux_ch=1536,
        lr=4e-5,
        decay=0.9,
        layers=24,
        iters=80000,
        batch=2,
        stride=426,
        classes=150,
        dataset="ADE20KDataset",
    ),
    "upernet_eva02_large_24_512_slide_80k_cocostuff164k": dict(
        arch="eva02_large",
        img=512,
        out=(7, 11, 15, 23),
        dpr=0.2,
        ch=1024,
        aux_ch=256,
        lr=4e-5,
        decay=0.9,
        layers=24,
        iters=80000,
        batch=2,
        stride=341,
        classes=171,
        dataset="COCOStuffDataset",
    ),
}


def _name(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


@pytest.mark.parametrize("path", [p for p in CONFIGS if _name(p) in RELEASED], ids=_name)
def test_released_hyper_parameters(path):
    cfg, want = Config.fromfile(path), RELEASED[_name(path)]
    model_cfg = _segmentor(cfg)
    bb, head, aux = model_cfg.backbone, model_cfg.decode_head, model_cfg.auxiliary_head
    assert (bb.arch, bb.img_size, bb.patch_size, tuple(bb.out_indices), bb.drop_path_rate) == (
        want["arch"],
        want["img"],
        16,
        want["out"],
        want["dpr"],
    )
    assert bb.use_cls_token is True
    width = 768 if want["arch"] == "eva02_base" else 1024
    assert head.type == "UPerHead" and tuple(head.pool_scales) == (1, 2, 3, 6)
    assert (
        head.in_channels == [width] * 4
        and head.channels == want["ch"]
        and head.num_classes == want["classes"]
    )
    assert (aux.type, aux.in_index, aux.channels, aux.num_classes) == (
        "FCNHead",
        2,
        want["aux_ch"],
        want["classes"],
    )
    assert aux.loss_decode.loss_weight == 0.4 and head.loss_decode.loss_weight == 1.0
    assert head.dropout_ratio == aux.dropout_ratio == 0.1
    crop = (want["img"], want["img"])
    assert model_cfg.test_cfg == dict(mode="slide", crop_size=crop, stride=(want["stride"],) * 2)
    assert tuple(model_cfg.data_preprocessor.size) == crop and model_cfg.data_preprocessor.seg_pad_val == 255
    ow = cfg.optim_wrapper
    assert (ow.type, ow.constructor) == ("AmpOptimWrapper", "EVA02LayerDecayOptimizerConstructor")
    assert ow.optimizer == dict(type="AdamW", lr=want["lr"], betas=(0.9, 0.999), weight_decay=0.05)
    assert ow.paramwise_cfg == dict(num_layers=want["layers"], layer_decay_rate=want["decay"])
    assert cfg.train_cfg.max_iters == want["iters"] and cfg.train_dataloader.batch_size == want["batch"]
    assert cfg.train_dataloader.dataset.type == want["dataset"]
    resize = next(t for t in cfg.train_dataloader.dataset.pipeline if t["type"] == "RandomResize")
    assert tuple(resize["scale"]) == (4 * want["img"], want["img"]) and tuple(resize["ratio_range"]) == (
        0.5,
        2.0,
    )
    crop_t = next(t for t in cfg.train_dataloader.dataset.pipeline if t["type"] == "RandomCrop")
    assert tuple(crop_t["crop_size"]) == crop and crop_t["cat_max_ratio"] == 0.75
    ratios = [t["ratio"] for t in cfg.tta_pipeline[1]["transforms"][0]]
    assert ratios == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def _segmentor(cfg: Config) -> ConfigDict:
    """The segmentor of a config; evaluation configs wrap it in the test-time-augmentation model."""
    return cfg.model.module if cfg.model.type == "SegTTAModel" else cfg.model


def _small(cfg: Config) -> Config:
    """Depth-reduced copy for CPU: 2 blocks, 64 px crops, narrow heads; backbone widths as configured."""
    model = _segmentor(cfg)
    model.backbone.depth = 2
    model.backbone.out_indices = (0, 0, 1, 1)
    model.backbone.img_size = 64
    model.data_preprocessor.size = (64, 64)
    model.test_cfg = dict(mode="slide", crop_size=(64, 64), stride=(43, 43))
    # narrow heads: the configured 768..1536-channel UperNet convs cost ~30 s per CPU step
    model.decode_head.channels = 32
    model.auxiliary_head.channels = 16
    cpu_fallback_optim(cfg)
    return cfg


def _batch(n: int, h: int, w: int, num_classes: int):
    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.integers(0, 255, (3, h, w), dtype=np.uint8)) for _ in range(n)]
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.from_numpy(rng.integers(0, num_classes, (1, h, w))))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_config_builds_trains_and_infers(path):
    cfg = _small(Config.fromfile(path))
    model = revert_sync_batchnorm(MODELS.build(_segmentor(cfg)))
    model.init_weights()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    num_classes = _segmentor(cfg).decode_head.num_classes
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    model.train()
    losses = model.train_step(_batch(2, 64, 64, num_classes), optim)
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, model.backbone.blocks[0].attn.qkv.weight)
    model.eval()
    with torch.no_grad():
        out = model.test_step(_batch(1, 80, 100, num_classes))  # non-square, 2x2 sliding windows
    assert out[0].pred_sem_seg.data.shape == (1, 80, 100)
    assert out[0].seg_logits.data.shape == (num_classes, 80, 100)


def test_schedule_is_released_poly_with_linear_warmup():
    cfg = Config.fromfile(osp.join(ROOT, "configs/seg/eva02/upernet_eva02_base_12_512_slide_60k.py"))
    base_lr, ratio, warm, total = 6e-5, 1e-6, 1500, 60000
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    from mmengine.optim import OptimWrapper

    wrapper = OptimWrapper(opt)
    scheds = [
        PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=wrapper)) for s in cfg.param_scheduler
    ]
    checkpoints = {0, 1, 750, 1499, 1500, 1501, 30000, 59999}
    for it in range(total):
        if it in checkpoints:
            # mmcv 1.x: poly(power 1, min 0) times the linear warm-up factor
            regular = base_lr * (1 - it / total)
            factor = 1 - (1 - it / warm) * (1 - ratio) if it < warm else 1.0
            assert opt.param_groups[0]["lr"] == pytest.approx(regular * factor, rel=1e-6, abs=1e-15), it
        for s in scheds:
            s.step()


def test_short_side_at_least_resize():
    img = np.zeros((300, 400, 3), np.uint8)
    sizes = {}
    for r in (0.5, 1.0, 1.5):
        t = TRANSFORMS.build(dict(type="ShortSideAtLeastResize", ratio=r, short=512, min_short=512))
        out = t(dict(img=img.copy(), img_shape=(300, 400), ori_shape=(300, 400)))
        sizes[r] = out["img"].shape[:2]
    # short side max(int(512 r), 512): 512 for r <= 1, 768 for r = 1.5; long side by the aspect ratio
    assert sizes == {0.5: (512, 683), 1.0: (512, 683), 1.5: (768, 1024)}
    with pytest.raises(ValueError, match="ratio=0"):
        TRANSFORMS.build(dict(type="ShortSideAtLeastResize", ratio=0))


def test_slide_equals_whole_when_the_image_fits_one_window():
    cfg = Config.fromfile(osp.join(ROOT, "configs/seg/toy/upernet_eva02_tiny_toy.py"))
    cfg.model.backbone.depth = 4
    cfg.model.backbone.out_indices = (0, 1, 2, 3)
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    model.init_weights()
    for h, w in ((128, 128), (96, 112)):  # exactly one window, and smaller than the window
        data = model.data_preprocessor(_batch(1, h, w, 6), training=False)
        meta = [s.metainfo for s in data["data_samples"]]
        with torch.no_grad():
            model.test_cfg = ConfigDict(mode="slide", crop_size=(128, 128), stride=(96, 96))
            slide = model.inference(data["inputs"], meta)
            model.test_cfg = ConfigDict(mode="whole")
            whole = model.inference(data["inputs"], meta)
        assert slide.shape == whole.shape == (1, 6, h, w)
        assert torch.allclose(slide, whole, atol=1e-5)


def test_iou_metric_by_hand_with_labels_outside_the_metainfo(tmp_path):
    """Toy evaluation path: ADE-style PNGs (0 = ignore, reduce_zero_label) through the toy test pipeline."""
    import cv2

    cfg = Config.fromfile(osp.join(ROOT, "configs/seg/toy/upernet_eva02_tiny_toy.py"))
    raw = np.array(
        [[0, 1, 1, 2], [1, 1, 2, 2], [3, 3, 9, 9], [3, 1, 1, 0]], np.uint8
    )  # 9 -> 8: not a toy class
    (tmp_path / "img.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    cv2.imwrite(str(tmp_path / "img.png"), raw)
    load = TRANSFORMS.build(dict(type="LoadAnnotations", reduce_zero_label=True))
    gt = load(dict(seg_map_path=str(tmp_path / "img.png"), reduce_zero_label=True, seg_fields=[]))[
        "gt_seg_map"
    ]
    assert gt.tolist() == [[255, 0, 0, 1], [0, 0, 1, 1], [2, 2, 8, 8], [2, 0, 0, 255]]
    pred = np.array([[5, 0, 1, 1], [0, 0, 1, 0], [2, 0, 2, 3], [2, 0, 0, 4]])
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = dict(classes=cfg.metainfo["classes"])
    sample = dict(
        pred_sem_seg=dict(data=torch.from_numpy(pred)[None]),
        gt_sem_seg=dict(data=torch.from_numpy(gt.astype(np.int64))[None]),
    )
    metric.process({}, [sample])
    result = metric.compute_metrics(metric.results)
    # By hand (mmseg's rule): 255 is dropped; label 8 (outside the 6 metainfo classes) is never a
    # ground-truth area, but a prediction on such a pixel still counts as a false positive.
    # class 0: gt (0,1),(0,2),(1,0),(1,1),(3,1),(3,2); pred 0 on 5 of them; pred==0 on 7 px -> 5 / 8
    # class 1: gt (0,3),(1,2),(1,3); TP 2; pred==1 on (0,2),(0,3),(1,2) -> 2 / 4
    # class 2: gt (2,0),(2,1),(3,0); TP 2; pred==2 on (2,0),(2,2),(3,0) -> 2 / 4
    # class 3: no gt, one prediction on the label-8 pixel (2,3) -> 0 / 1
    # classes 4, 5: predicted only on ignored pixels -> NaN, left out of the mean
    want = np.mean([5 / 8, 2 / 4, 2 / 4, 0.0]) * 100
    assert result["mIoU"] == pytest.approx(round(want, 2), abs=0.01)


@pytest.mark.parametrize(
    "base, suffix, reduced",
    [
        ("ade20k.py", ".png", True),
        ("ade20k_640x640.py", ".png", True),
        ("coco-stuff164k.py", "_labelTrainIds.png", False),
    ],
)
def test_dataset_configs_load_labels_as_their_dataset_defines(base, suffix, reduced, tmp_path):
    """Pipelines leave zero-label reduction to the dataset: ADE20K shifts (0 -> 255), COCO-Stuff not."""
    import cv2
    from mmseg.registry import DATASETS

    cfg = Config.fromfile(osp.join(ROOT, "configs/seg/_base_/datasets", base))
    data = cfg.val_dataloader.dataset
    img_dir, ann_dir = tmp_path / data.data_prefix.img_path, tmp_path / data.data_prefix.seg_map_path
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / "a.jpg"), np.zeros((6, 8, 3), np.uint8))
    raw = np.array([[0, 1, 2, 3, 4, 5, 6, 7]] * 6, np.uint8)
    cv2.imwrite(str(ann_dir / f"a{suffix}"), raw)
    dataset = DATASETS.build(dict(data, data_root=str(tmp_path)))
    gt = dataset[0]["data_samples"].gt_sem_seg.data[0].numpy()
    want = np.where(raw == 0, 255, raw.astype(np.int64) - 1) if reduced else raw
    assert gt.shape == (6, 8) and (gt == want).all()


RELEASED_PATHS = [p for p in CONFIGS if _name(p) in RELEASED]


@pytest.mark.parametrize("path", RELEASED_PATHS, ids=_name)
def test_released_configs_seed_zero_deterministic(path):
    # the released logs: "Set random seed to 0, deterministic: True"
    cfg = Config.fromfile(path)
    assert cfg.randomness == dict(seed=0, deterministic=True)
    assert cfg.env_cfg.cudnn_benchmark is False


def test_ms_eval_config_tests_multi_scale_and_flip_without_flags(tmp_path):
    """The ms-eval config itself is the released protocol: TTA wrapper, 6 scales x 2 flips, slide."""
    import cv2

    from seg.launch import is_tta_config

    cfg = Config.fromfile(osp.join(ROOT, "configs/seg/eva02/upernet_eva02_large_24_512_slide_ms_eval.py"))
    assert is_tta_config(cfg) and cfg.model.module.type == "EncoderDecoder"
    assert cfg.model.module.test_cfg.mode == "slide"
    assert not is_tta_config(Config.fromfile(CONFIGS[0]))
    pipeline = [TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline]
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((300, 400, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.ones((300, 400), np.uint8))
    results = dict(img_path=str(tmp_path / "a.jpg"), seg_map_path=str(tmp_path / "a.png"))
    results.update(reduce_zero_label=True, seg_fields=[])
    for t in pipeline:
        results = t(results)
    views = [(tuple(s.metainfo["img_shape"]), s.metainfo["flip"]) for s in results["data_samples"]]
    # short side max(int(512 r), 512), long side by the 4:3 aspect ratio; each scale unflipped and flipped
    shorts = [max(int(512 * r), 512) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    want = [((s, int(s * 4 / 3 + 0.5)), flip) for s in shorts for flip in (False, True)]
    assert views == want


def test_seg_train_refuses_an_evaluation_config():
    import subprocess
    import sys

    path = "configs/seg/eva02/upernet_eva02_large_24_512_slide_ms_eval.py"
    run = subprocess.run(
        [sys.executable, "tools/seg_train.py", path], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode != 0
    assert f"{path} is an evaluation config" in run.stderr
