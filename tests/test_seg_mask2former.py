"""Mask2Former on EVA-02 (mmseg 1.x Mask2FormerHead on mmdet 3.x).

Configs against values transcribed from EVA-01's released Mask2Former configs and EVA-02's released
UperNet configs; layer decay by hand; a B-size forward/backward at the released 896 crop; ADE20K
fine-tuned from a COCO-Stuff model on a tiny run; sliding windows and EVA-01's test padding by hand;
one clear error per bad input.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.registry import HOOKS, MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

import seg  # noqa: F401
from seg.finetune import CheckpointMismatchError, SegmentorCheckpointHook
from seg.layer_decay import EVA02LayerDecayOptimizerConstructor  # noqa: F401  (registered)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
M2F_DIR = osp.join(ROOT, "configs/seg/eva02/mask2former")
TOY = osp.join(ROOT, "configs/seg/toy/mask2former_eva02_tiny_toy.py")
PY = sys.executable
init_default_scope("mmseg")

# EVA-01's released Mask2Former recipe (baaivision/EVA, EVA-01/seg/configs/):
# coco_stuff164k/eva_mask2former_896_60k_cocostuff164k_ss.py,
# ade20k/eva_mask2former_896_20k_coco164k2ade20k_{ss,ms}.py, _base_/models/mask2former_beit*.py.
EVA01_COMMON = dict(
    crop=896,
    train_scale=(3584, 896),
    ratio_range=(0.5, 2.0),
    cat_max_ratio=0.75,
    slide_stride=512,
    queries=200,
    decoder_layers=8,
    encoder_layers=6,
    feat_levels=3,
    deform_points=4,
    loss_cls=2.0,
    no_object_weight=0.1,
    loss_mask=5.0,
    loss_dice=5.0,
    num_points=12544,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
    costs=(2.0, 5.0, 5.0),
    betas=(0.9, 0.999),
    weight_decay=0.05,
    warmup_ratio=1e-6,
    # `_ms.py`: img_ratios 512/896 .. 1280/896 of (3584, 896), flip, PadShortSide(896)
    ms_short_sides=(512, 640, 768, 896, 1024, 1152, 1280),
    ms_pad=896,
    # mmcv_custom/layer_decay_optimizer_constructor.py: these head parameters share layer 0
    layer0=("query_embed", "query_feat", "level_embed", "cls_embed", "mask_embed"),
)
EVA01_TASK = {
    "cocostuff164k": dict(
        classes=171, dataset="COCOStuffDataset", iters=60000, warmup=1500, total_batch=32, lr=1.5e-5
    ),
    "coco2ade20k": dict(
        classes=150, dataset="ADE20KDataset", iters=20000, warmup=500, total_batch=64, lr=2.5e-5
    ),
}
# EVA-02's released UperNet configs (EVA-02/seg/configs/eva02/upernet/): the backbone values reused here.
EVA02_SIZE = {
    "base": dict(arch="eva02_base", width=768, depth=12, decay=0.85, dpr=0.15, out=(3, 5, 7, 11)),
    "large": dict(arch="eva02_large", width=1024, depth=24, decay=0.9, dpr=0.2, out=(7, 11, 15, 23)),
}
# Head width: L keeps EVA-01's 1024 (32 heads, FFN 4096); B takes Mask2Former's standard 256
# (8 heads, FFN 1024 in the pixel decoder and 2048 in the transformer decoder).
HEAD = {
    "large": dict(width=1024, heads=32, enc_ffn=4096, dec_ffn=4096),
    "base": dict(width=256, heads=8, enc_ffn=1024, dec_ffn=2048),
}
CONFIGS = sorted(glob.glob(osp.join(M2F_DIR, "*.py")))


def _name(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def _size_task(path: str) -> tuple[str, str]:
    name = _name(path)
    size = "base" if "_base_" in name else "large"
    task = "cocostuff164k" if name.endswith("cocostuff164k") else "coco2ade20k"
    return size, task


def test_all_four_configs_exist():
    assert {_size_task(p) for p in CONFIGS} == {
        (s, t) for s in ("base", "large") for t in ("cocostuff164k", "coco2ade20k")
    }


@pytest.mark.parametrize("path", CONFIGS, ids=_name)
def test_config_builds_with_the_released_recipe(path):
    size, task = _size_task(path)
    common, want, eva02, head_w = EVA01_COMMON, EVA01_TASK[task], EVA02_SIZE[size], HEAD[size]
    cfg = Config.fromfile(path)
    assert isinstance(cfg.model, ConfigDict)
    assert set(cfg.custom_imports.imports) == {"seg", "mmdet.models"}

    # backbone: EVA-02's own values
    bb = cfg.model.backbone
    assert (bb.type, bb.arch, bb.img_size, bb.patch_size) == ("EVA02", eva02["arch"], common["crop"], 16)
    assert tuple(bb.out_indices) == eva02["out"] and bb.drop_path_rate == eva02["dpr"]

    # head: EVA-01's structure and losses
    head = cfg.model.decode_head
    assert head.type == "Mask2FormerHead" and head.num_classes == want["classes"]
    assert head.in_channels == [eva02["width"]] * 4 and head.strides == [4, 8, 16, 32]
    assert head.num_queries == common["queries"] and head.num_transformer_feat_level == common["feat_levels"]
    assert head.feat_channels == head.out_channels == head_w["width"]
    enc = head.pixel_decoder.encoder
    assert enc.num_layers == common["encoder_layers"]
    assert enc.layer_cfg.self_attn_cfg.num_heads == head_w["heads"]
    assert enc.layer_cfg.self_attn_cfg.num_points == common["deform_points"]
    assert enc.layer_cfg.ffn_cfg.feedforward_channels == head_w["enc_ffn"]
    dec = head.transformer_decoder
    assert (
        dec.num_layers == common["decoder_layers"]
        and dec.layer_cfg.cross_attn_cfg.num_heads == head_w["heads"]
    )
    assert dec.layer_cfg.ffn_cfg.feedforward_channels == head_w["dec_ffn"]
    assert head.positional_encoding.num_feats == head.pixel_decoder.positional_encoding.num_feats
    assert head.positional_encoding.num_feats * 2 == head_w["width"]
    assert head.loss_cls.loss_weight == common["loss_cls"]
    assert head.loss_cls.class_weight == [1.0] * want["classes"] + [common["no_object_weight"]]
    assert (head.loss_mask.loss_weight, head.loss_dice.loss_weight) == (
        common["loss_mask"],
        common["loss_dice"],
    )
    assert head.loss_dice.naive_dice is True and head.loss_dice.eps == 1.0
    tc = head.train_cfg
    assert (tc.num_points, tc.oversample_ratio, tc.importance_sample_ratio) == (
        common["num_points"],
        common["oversample_ratio"],
        common["importance_sample_ratio"],
    )
    assert tuple(c.weight for c in tc.assigner.match_costs) == common["costs"]

    # optimisation: EVA-01's lr / schedule / batch, EVA-02's layer decay over its own depth
    ow = cfg.optim_wrapper
    assert ow.type == "OptimWrapper" and "clip_grad" not in ow  # fp32, no clipping, as EVA-01
    assert ow.optimizer == dict(
        type="AdamW", lr=want["lr"], betas=common["betas"], weight_decay=common["weight_decay"]
    )
    assert (
        ow.paramwise_cfg.num_layers == eva02["depth"] and ow.paramwise_cfg.layer_decay_rate == eva02["decay"]
    )
    assert tuple(ow.paramwise_cfg.layer0_prefixes) == tuple(f"decode_head.{n}" for n in common["layer0"])
    assert cfg.train_cfg.max_iters == want["iters"]
    warm, poly = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.end) == (
        "LinearLR",
        common["warmup_ratio"],
        want["warmup"] + 1,
    )
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 1.0, 0.0, want["iters"] + 1)
    assert cfg.train_dataloader.batch_size == 1 and cfg.auto_scale_lr.base_batch_size == want["total_batch"]

    # data and test protocol
    assert cfg.train_dataloader.dataset.type == want["dataset"]
    pipe = {t["type"]: t for t in cfg.train_dataloader.dataset.pipeline}
    assert tuple(pipe["RandomResize"]["scale"]) == common["train_scale"]
    assert tuple(pipe["RandomResize"]["ratio_range"]) == common["ratio_range"]
    assert tuple(pipe["RandomCrop"]["crop_size"]) == (common["crop"],) * 2
    assert pipe["RandomCrop"]["cat_max_ratio"] == common["cat_max_ratio"]
    assert tuple(cfg.model.data_preprocessor.size) == (common["crop"],) * 2
    test_pipe = [t["type"] for t in cfg.test_dataloader.dataset.pipeline]
    assert test_pipe == [
        "LoadImageFromFile",
        "Resize",
        "ResizeToMultiple",
        "LoadAnnotations",
        "PackSegInputs",
    ]
    assert tuple(cfg.test_dataloader.dataset.pipeline[1]["scale"]) == common["train_scale"]
    assert cfg.model.test_cfg == dict(
        mode="slide", crop_size=(common["crop"],) * 2, stride=(common["slide_stride"],) * 2
    )
    scales, _, flips, pads, _, _ = cfg.tta_pipeline[1]["transforms"]
    assert [tuple(t["scale"]) for t in scales] == [(4 * s, s) for s in common["ms_short_sides"]]
    assert [t["prob"] for t in flips] == [0.0, 1.0] and pads[0]["size"] == common["ms_pad"]

    # checkpoint flow: ADE20K starts from the COCO-Stuff model of the same size
    hook = cfg.custom_hooks[0]
    assert hook.type == "SegmentorCheckpointHook"
    if task == "coco2ade20k":
        source = _name(path).replace("20k_coco2ade20k", "60k_cocostuff164k")
        assert cfg.load_from == f"work_dirs/{source}/iter_60000.pth"
        assert osp.isfile(osp.join(M2F_DIR, source + ".py"))
        assert hook.reinit_class_layers is True and hook.require_load_from is True
        assert cfg.model.backbone.pretrained is None
    else:
        assert cfg.get("load_from") is None and not hook.get("reinit_class_layers", False)

    # builds through mmseg's registry, with the class layer sized num_classes + 1
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == "Mask2FormerEncoderDecoder"
    assert model.backbone.depth == eva02["depth"] and model.backbone.out_strides == (4, 8, 16, 32)
    assert model.decode_head.cls_embed.out_features == want["classes"] + 1
    assert len(model.decode_head.transformer_decoder.layers) == common["decoder_layers"]
    assert len(model.decode_head.pixel_decoder.encoder.layers) == common["encoder_layers"]
    assert model.decode_head.query_embed.num_embeddings == common["queries"]


def test_layer_decay_groups_by_hand():
    """B COCO-Stuff config: lr x 0.85 ** (13 - layer id); EVA-01's head embeddings sit in layer 0."""
    cfg = Config.fromfile(osp.join(M2F_DIR, "mask2former_eva02_base_12_896_slide_60k_cocostuff164k.py"))
    model = MODELS.build(cfg.model)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    lr, rate = 1.5e-5, 0.85
    group_of = {id(p): g for g in optim.optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    want = {
        "backbone.patch_embed.proj.weight": (rate**13, 0.05),
        "backbone.pos_embed": (rate**13, 0.05),
        "backbone.blocks.0.attn.qkv.weight": (rate**12, 0.05),
        "backbone.blocks.11.mlp.w3.bias": (rate**1, 0.0),
        "backbone.fpn1.0.weight": (1.0, 0.05),
        "decode_head.query_embed.weight": (rate**13, 0.05),
        "decode_head.query_feat.weight": (rate**13, 0.05),
        "decode_head.level_embed.weight": (rate**13, 0.05),
        "decode_head.cls_embed.weight": (rate**13, 0.05),
        "decode_head.cls_embed.bias": (rate**13, 0.0),
        "decode_head.mask_embed.0.weight": (rate**13, 0.05),
        "decode_head.transformer_decoder.layers.0.cross_attn.attn.in_proj_weight": (1.0, 0.05),
        "decode_head.pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.weight": (1.0, 0.05),
        "decode_head.pixel_decoder.mask_feature.bias": (1.0, 0.0),
    }
    for name, (scale, wd) in want.items():
        group = group_of[id(params[name])]
        assert group["lr"] == pytest.approx(lr * scale, rel=1e-9), name
        assert group["weight_decay"] == wd, name
    assert sum(len(g["params"]) for g in optim.optimizer.param_groups) == len(params)


def _sample(h: int, w: int, gt: torch.Tensor | None = None, **meta) -> SegDataSample:
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), **meta))
    if gt is not None:
        sample.gt_sem_seg = PixelData(data=gt)
    return sample


def test_base_forward_backward_at_the_released_crop():
    """One B-size training step at 896 x 896 (batch 1) on CPU: every parameter gets a gradient."""
    cfg = Config.fromfile(osp.join(M2F_DIR, "mask2former_eva02_base_12_896_slide_60k_cocostuff164k.py"))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights prints one line per parameter
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    model.train()
    size = 896
    gt = torch.full((1, size, size), 255, dtype=torch.long)  # 255: ignored
    for i, cls in enumerate((0, 7, 42, 99, 150, 170)):  # six regions of 2 x 3 tiles
        y, x = divmod(i, 3)
        gt[:, y * 448 : (y + 1) * 448, x * 298 : (x + 1) * 298] = cls
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, size, size), dtype=np.uint8))
    data = model.data_preprocessor(
        dict(inputs=[image], data_samples=[_sample(size, size, gt)]), training=True
    )
    feats = model.extract_feat(data["inputs"])
    # the simple pyramid: strides 4, 8, 16, 32, 768 channels each
    assert [tuple(f.shape) for f in feats] == [(1, 768, 896 // s, 896 // s) for s in (4, 8, 16, 32)]
    losses = model.decode_head.loss(feats, data["data_samples"], model.train_cfg)
    # class / mask / dice losses on the 8 decoder layers and on the prediction before the first
    stages = ["", *(f"d{i}." for i in range(8))]
    assert set(losses) == {f"{s}loss_{k}" for s in stages for k in ("cls", "mask", "dice")}
    assert all(torch.isfinite(v) for v in losses.values())
    # At initialisation the class scores are nearly uniform over 171 classes + "no object", so the
    # class-weighted cross-entropy is close to ln(172), times the loss weight 2.
    assert losses["loss_cls"].item() == pytest.approx(2 * math.log(172), rel=0.2)
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []  # find_unused_parameters=False is right


# ----------------------------------------------------------------- bad input


def _toy_cfg(**head) -> Config:
    cfg = Config.fromfile(TOY)
    cfg.model.decode_head.update(head)
    return cfg


@pytest.mark.parametrize(
    "head, message",
    [
        (
            dict(strides=[8, 16, 32, 64]),
            r"decode_head.strides=\[8, 16, 32, 64\] do not match the backbone pyramid's strides "
            r"\[4, 8, 16, 32\]",
        ),
        (
            dict(in_channels=[256] * 4),
            r"decode_head.in_channels=\[256, 256, 256, 256\] do not match the backbone pyramid's channels "
            r"\[192, 192, 192, 192\]",
        ),
        (
            dict(num_classes=4),
            r"decode_head.loss_cls.class_weight has 7 entries; with num_classes=4 it needs 5",
        ),
    ],
    ids=["strides", "channels", "class_weight"],
)
def test_head_that_does_not_fit_the_pyramid_is_refused(head, message):
    with pytest.raises(ValueError, match=message):
        MODELS.build(_toy_cfg(**head).model)


def test_eva02_pyramid_strides_for_both_patch_sizes():
    for patch in (16, 8):
        cfg = _toy_cfg()
        cfg.model.backbone.patch_size = patch
        model = MODELS.build(cfg.model)
        assert model.backbone.out_strides == (4, 8, 16, 32)
        feats = model.extract_feat(torch.zeros(1, 3, 128, 128))
        assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]  # 128 / stride, measured


# ------------------------------------------------------ sliding windows, test padding


def _toy_model() -> torch.nn.Module:
    model = revert_sync_batchnorm(MODELS.build(_toy_cfg().model)).eval()
    model.init_weights()
    return model


def test_slide_inference_with_pad_shape_by_hand():
    """Two 128-px windows (stride 64) over a 128 x 192 input whose metainfo carries pad_shape
    (set by ResizeToMultiple): the result is the window average computed by hand."""
    model = _toy_model()
    torch.manual_seed(1)
    inputs = torch.randn(1, 3, 128, 192)
    meta = dict(img_shape=(128, 192), ori_shape=(128, 192), pad_shape=(128, 192))
    model.test_cfg = ConfigDict(mode="slide", crop_size=(128, 128), stride=(64, 64))
    with torch.no_grad():
        slide = model.inference(inputs, [dict(meta)])
        left = model.encode_decode(inputs[..., :128], [dict(img_shape=(128, 128))])
        right = model.encode_decode(inputs[..., 64:], [dict(img_shape=(128, 128))])
    want = torch.zeros(1, 6, 128, 192)
    want[..., :128] += left
    want[..., 64:] += right
    want[..., 64:128] /= 2
    assert torch.allclose(slide, want, atol=1e-5)
    with torch.no_grad():  # one window covering the whole padded input: slide == whole
        model.test_cfg = ConfigDict(mode="slide", crop_size=(128, 128), stride=(96, 96))
        one = model.inference(inputs[..., :128], [dict(meta, img_shape=(128, 128), pad_shape=(128, 128))])
        model.test_cfg = ConfigDict(mode="whole")
        whole = model.inference(inputs[..., :128], [dict(meta, img_shape=(128, 128), pad_shape=(128, 128))])
    assert torch.allclose(one, whole, atol=1e-5)


def test_multi_scale_test_pipeline_by_hand(tmp_path):
    """EVA-01's multi-scale protocol on a 300 x 400 image: scale (4 s, s) keeping the ratio,
    up to a multiple of 32, both flips, sides below 896 zero-padded (recorded for removal)."""
    cfg = Config.fromfile(osp.join(M2F_DIR, "mask2former_eva02_base_12_896_slide_20k_coco2ade20k.py"))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((300, 400, 3), 100, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.ones((300, 400), np.uint8))
    tta = [TRANSFORMS.build(t) for t in cfg.tta_pipeline]
    results = dict(img_path=str(tmp_path / "a.jpg"), seg_map_path=str(tmp_path / "a.png"), seg_fields=[])
    results["reduce_zero_label"] = True
    for t in tta:
        results = t(results)
    assert len(results["inputs"]) == 7 * 2
    got = {}
    for inputs, sample in zip(results["inputs"], results["data_samples"]):
        got.setdefault((tuple(inputs.shape[1:]), tuple(sample.img_padding_size)), []).append(sample.flip)
        assert sample.ori_shape == (300, 400) and sample.gt_sem_seg.shape == (300, 400)
    # s = 512: 300 x 400 -> 512 x int(400 * 512 / 300 + 0.5) = 512 x 683 -> multiple of 32: 512 x 704
    #          -> padded to 896 x 896: right 192, bottom 384
    assert got[((896, 896), (0, 192, 0, 384))] == [False, True]
    # s = 896: 896 x 1195 -> 896 x 1216, no padding; s = 1280: 1280 x 1707 -> 1280 x 1728
    assert got[((896, 1216), (0, 0, 0, 0))] == [False, True]
    assert got[((1280, 1728), (0, 0, 0, 0))] == [False, True]


def test_recorded_test_padding_is_cut_off_the_prediction():
    """postprocess_result removes PadShortSide's (left, right, top, bottom) before resizing back."""
    model = _toy_model()
    logits = torch.zeros(1, 6, 896, 896)
    logits[:, 1, :512, :704] = 5.0  # the image
    logits[:, 2, 512:, :] = 5.0  # bottom padding
    logits[:, 3, :, 704:] = 5.0  # right padding
    sample = _sample(512, 704, img_padding_size=(0, 192, 0, 384), flip=False)
    sample.set_metainfo(dict(ori_shape=(300, 400)))
    out = model.postprocess_result(logits, [sample])[0]
    assert out.pred_sem_seg.data.shape == (1, 300, 400)
    assert (out.pred_sem_seg.data == 1).all()


def test_pad_short_side_pads_only_short_sides():
    pad = TRANSFORMS.build(dict(type="PadShortSide", size=128))
    out = pad(dict(img=np.ones((100, 300, 3), np.uint8)))
    assert out["img"].shape == (128, 300, 3) and out["img_padding_size"] == (0, 0, 0, 28)
    assert out["img"][100:].sum() == 0 and out["img"][:100].min() == 1
    out = pad(dict(img=np.ones((200, 300, 3), np.uint8)))
    assert out["img"].shape == (200, 300, 3) and out["img_padding_size"] == (0, 0, 0, 0)
    with pytest.raises(KeyError, match="load annotations after it"):
        pad(dict(img=np.ones((4, 4, 3), np.uint8), gt_seg_map=np.zeros((4, 4), np.uint8)))


# --------------------------------------------- checkpoint flow through the tools (tiny runs)


def _run(args: list[str], timeout: int = 600, ok: bool = True) -> str:
    proc = subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, out[-4000:]
    return out


def _data_opts(root: str) -> list[str]:
    return [f"{k}_dataloader.dataset.data_root={root}" for k in ("train", "val", "test")]


@pytest.fixture(scope="module")
def toy3(tmp_path_factory) -> str:
    """Tiny 3-shape toy set (labels: background, circle, square, triangle)."""
    out = tmp_path_factory.mktemp("m2f_toy")
    args = ["--num-train", "16", "--num-val", "2", "--num-test", "1", "--size", "128", "--max-objects", "3"]
    _run([PY, "tools/make_toy_data.py", "--out", str(out), *args, "--shapes", "circle,square,triangle"])
    return str(out / "toy_ade")


def test_toy_set_with_a_subset_of_shapes(toy3):
    root = osp.dirname(toy3)
    assert open(osp.join(toy3, "classes.txt")).read().split() == [
        "ignore",
        "background",
        "circle",
        "square",
        "triangle",
    ]
    labels = np.unique(
        np.concatenate(
            [cv2.imread(p, cv2.IMREAD_UNCHANGED).ravel() for p in glob.glob(f"{toy3}/annotations/*/*.png")]
        )
    )
    assert set(labels.tolist()) <= {0, 1, 2, 3, 4} and {2, 3, 4} <= set(labels.tolist())
    coco = json.load(open(osp.join(root, "toy_coco", "annotations", "instances_train.json")))
    assert [c["id"] for c in coco["categories"]] == [1, 3, 5]  # circle, square, triangle ids kept
    assert {a["category_id"] for a in coco["annotations"]} <= {1, 3, 5}
    bad = _run([PY, "tools/make_toy_data.py", "--out", root, "--shapes", "circle,hexagon"], ok=False)
    assert "--shapes must be distinct names among" in bad


@pytest.fixture(scope="module")
def source_model(toy3, tmp_path_factory) -> str:
    """A 6-class toy Mask2Former after 2 iterations of tools/seg_train.py (the 'COCO-Stuff' model)."""
    work = str(tmp_path_factory.mktemp("m2f_source"))
    opts = ["train_cfg.max_iters=2", "train_cfg.val_interval=2", "param_scheduler.1.end=3"]
    _run([PY, "tools/seg_train.py", TOY, "--work-dir", work, "--cfg-options", *_data_opts(toy3), *opts])
    return osp.join(work, "iter_2.pth")


@HOOKS.register_module()
class _StateSnapshotHook(Hook):
    """Test helper: the model's tensors before loading (fresh init) and after (at train start)."""

    priority = "LOWEST"

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        self.fresh = {k: v.clone() for k, v in runner.model.state_dict().items()}

    def before_train(self, runner) -> None:
        self.loaded = {k: v.clone() for k, v in runner.model.state_dict().items()}


def _finetune_cfg(toy3: str, source: str, work: str, num_classes: int, **hook) -> Config:
    cfg = _toy_cfg(num_classes=num_classes)
    cfg.model.decode_head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    for split in ("train", "val", "test"):
        cfg[f"{split}_dataloader"].dataset.data_root = toy3
    cfg.merge_from_dict({"train_cfg.max_iters": 1, "train_cfg.val_interval": 10, "param_scheduler.1.end": 2})
    cfg.load_from = source
    cfg.work_dir = work
    cfg.custom_hooks = [dict(type="SegmentorCheckpointHook", **hook), dict(type="_StateSnapshotHook")]
    cfg.visualizer.name = f"m2f_vis_{osp.basename(work)}"
    return cfg


def test_finetune_reinitialises_exactly_the_class_layers(toy3, source_model, tmp_path):
    """6 -> 4 classes (the COCO-Stuff -> ADE20K flow on a tiny run): the class embedding keeps its
    fresh initialisation, every other tensor equals the source checkpoint."""
    cfg = _finetune_cfg(
        toy3, source_model, str(tmp_path / "ft"), 4, reinit_class_layers=True, require_load_from=True
    )
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, SegmentorCheckpointHook))
    snap = next(h for h in runner.hooks if type(h).__name__ == "_StateSnapshotHook")
    reinit = ["decode_head.cls_embed.weight", "decode_head.cls_embed.bias"]
    assert hook.reinitialised == reinit
    source = torch.load(source_model)["state_dict"]
    assert tuple(source["decode_head.cls_embed.weight"].shape) == (7, 64)
    assert set(snap.loaded) == set(source)
    for key, value in snap.loaded.items():
        if key in reinit:
            assert value.shape[0] == 5 and torch.equal(value, snap.fresh[key]), key
        else:
            assert torch.equal(value, source[key]), key
    log = open(glob.glob(str(tmp_path / "ft" / "*" / "*.log"))[0]).read()
    assert (
        "6 -> 4 classes; re-initialised (not loaded): decode_head.cls_embed.weight (7, 64) -> (5, 64) "
        "(checkpoint -> model), decode_head.cls_embed.bias (7,) -> (5,) (checkpoint -> model)"
    ) in log


def test_class_count_mismatch_without_reinit_is_refused(toy3, source_model, tmp_path):
    cfg = _finetune_cfg(toy3, source_model, str(tmp_path / "ft"), 4)
    with pytest.raises(CheckpointMismatchError, match="was trained for 6 classes, the config's model has 4"):
        Runner.from_cfg(cfg).train()


def test_resuming_a_finetuning_run_with_its_source_as_load_from_is_refused(toy3, source_model, tmp_path):
    cfg = _finetune_cfg(
        toy3, source_model, str(tmp_path / "ft"), 4, reinit_class_layers=True, require_load_from=True
    )
    cfg.resume = True
    with pytest.raises(ValueError, match="add --cfg-options load_from=None"):
        Runner.from_cfg(cfg).train()


@pytest.mark.parametrize("damage", ["missing", "shape"])
def test_checkpoint_of_another_architecture_is_refused(toy3, source_model, tmp_path, damage):
    checkpoint = torch.load(source_model)
    if damage == "missing":
        del checkpoint["state_dict"]["decode_head.level_embed.weight"]
        message = r"not a checkpoint of this segmentor; 1 tensors missing, e.g. \['decode_head.level_embed"
    else:
        checkpoint["state_dict"]["decode_head.level_embed.weight"] = torch.zeros(4, 64)
        message = r"tensors of another architecture: decode_head.level_embed.weight \(4, 64\) -> \(3, 64\)"
    damaged = str(tmp_path / "damaged.pth")
    torch.save(checkpoint, damaged)
    cfg = _finetune_cfg(toy3, damaged, str(tmp_path / "ft"), 4, reinit_class_layers=True)
    with pytest.raises(CheckpointMismatchError, match=message):
        Runner.from_cfg(cfg).train()


def test_testing_with_a_checkpoint_of_another_class_count_fails_clearly(toy3, source_model, tmp_path):
    opts = [*_data_opts(toy3), "model.decode_head.num_classes=4"]
    opts.append("model.decode_head.loss_cls.class_weight=[1.0,1.0,1.0,1.0,0.1]")
    out = _run(
        [PY, "tools/seg_test.py", TOY, source_model, "--work-dir", str(tmp_path), "--cfg-options", *opts],
        ok=False,
    )
    # The data check refuses the 4-class model before the 6-class checkpoint is read (the checkpoint's
    # own class-count message is covered by the fine-tuning tests above).
    assert "error: model.decode_head.num_classes=4 but the test dataset has 6 classes" in out
    assert "set model.decode_head.num_classes=6" in out


def test_ade20k_config_without_the_cocostuff_model_fails_clearly(toy3, tmp_path):
    config = osp.join(M2F_DIR, "mask2former_eva02_base_12_896_slide_20k_coco2ade20k.py")
    missing = str(tmp_path / "no_such_model.pth")
    opts = [*_data_opts(toy3), f"load_from={missing}"]
    out = _run(
        [PY, "tools/seg_train.py", config, "--work-dir", str(tmp_path), "--cfg-options", *opts], ok=False
    )
    what = f"load_from='{missing}' does not exist"
    assert f"FileNotFoundError: this config fine-tunes a whole segmentor, but {what}" in out
    assert (
        "Train configs/seg/eva02/mask2former/mask2former_eva02_base_12_896_slide_60k_cocostuff164k.py first"
        in out
    )


def test_toy_mask2former_tests_with_tta_through_the_tools(toy3, source_model, tmp_path):
    out = _run(
        [PY, "tools/seg_test.py", TOY, source_model, "--tta", "--work-dir", str(tmp_path), "--cfg-options"]
        + [*_data_opts(toy3), "test_dataloader.dataset.indices=1"]
    )
    assert "Iter(test) [1/1]" in out and "mIoU:" in out
