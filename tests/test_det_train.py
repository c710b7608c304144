"""Training on the toy set: the loss goes down, EMA (from the loaded weights, restored on resume),
--resume after an interruption, 2-process gloo DDP, and test-time augmentation (maskness, cap)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from torch import nn

import det  # noqa: F401
import toydata
from det.datasets import register_all
from det.ema import ModelEMA
from det.engine import do_train, load_weights
from det.tta import EVAGeneralizedRCNNWithTTA, row_detection_cap, tta_from_config

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"
TRAIN = ROOT / "tools/lazyconfig_train_net.py"

# Small enough for two CPU cores: 2-block ViT, 128 px, 2 images, few RoIs.
SMALL = [
    "model.backbone.net.depth=2",
    "model.backbone.net.window_block_indexes=[0]",
    "model.roi_heads.batch_size_per_image=16",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toydata.generate(out, num_train=16, num_val=2, num_test=1, size=128, max_objects=3, seed=4)
    register_all(out, overwrite=True)
    return out


def _cfg(extra):
    cfg = LazyConfig.load(str(TOY))
    return LazyConfig.apply_overrides(cfg, SMALL + extra)


def _metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.json").read_text().splitlines()]


def test_ema_by_hand():
    lin = nn.Linear(1, 1, bias=False)
    nn.init.constant_(lin.weight, 1.0)
    ema = ModelEMA(lin, decay=0.75)
    nn.init.constant_(lin.weight, 3.0)
    ema.update(lin)
    assert ema.state["weight"].item() == pytest.approx(0.75 * 1 + 0.25 * 3)
    with ema.apply_to(lin):
        assert lin.weight.item() == pytest.approx(1.5)
    assert lin.weight.item() == 3.0
    other = ModelEMA(lin, decay=0.75)
    other.load_state_dict(ema.state_dict())
    assert other.state["weight"].item() == pytest.approx(1.5)


def test_short_training_lowers_loss_and_tracks_ema(root, tmp_path):
    cfg = _cfg(
        [
            f"train.output_dir={tmp_path}",
            "train.max_iter=16",
            "train.log_period=1",
            "train.checkpointer.period=100",
            "dataloader.evaluator=null",
            "train.model_ema.enabled=True",
            "train.model_ema.decay=0.0",
            "train.seed=0",
        ]
    )
    from functools import partial

    from det.lr_decay import eva02_lr_factor

    cfg.optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=0.9, num_layers=2)
    do_train(cfg)
    losses = [m["total_loss"] for m in _metrics(tmp_path) if "total_loss" in m]
    assert len(losses) >= 10
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, losses
    state = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert state["iteration"] == 15
    # decay 0 -> the EMA copy is exactly the last weights.
    for k, v in state["model"].items():
        assert torch.equal(state["ema_state"][k], v), k


def _run_train(args, out_dir, env, **kw):
    cmd = [
        sys.executable,
        str(TRAIN),
        "--config-file",
        str(TOY),
        *args,
        *SMALL,
        f"train.output_dir={out_dir}",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_resume_after_interruption(root, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="2")
    common = [
        "train.max_iter=6",
        "train.checkpointer.period=3",
        "dataloader.evaluator=null",
        "train.log_period=1",
    ]
    proc = _run_train(common, tmp_path, env, start_new_session=True)
    ckpt = tmp_path / "model_0000002.pth"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # interrupt right after the first checkpoint
    proc.wait()
    assert ckpt.exists(), proc.stdout.read()[-3000:]
    assert not (tmp_path / "model_final.pth").exists()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["iteration"] == 2

    proc = _run_train(["--resume", *common], tmp_path, env)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    assert "Starting training from iteration 3" in log
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 5
    # AdamW's per-parameter step counters continue from the checkpoint: 3 + 3 steps.
    steps = {float(s["step"]) for s in final["trainer"]["optimizer"]["state"].values()}
    assert steps == {6.0}
    iters = [m["iteration"] for m in _metrics(tmp_path) if "total_loss" in m]
    assert iters[-3:] == [3, 4, 5]


def test_two_process_gloo_training(root, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")
    proc = _run_train(
        [
            "--num-gpus",
            "2",
            "--dist-url",
            "auto",
            "train.max_iter=2",
            "train.eval_period=2",
            "train.checkpointer.period=100",
            "train.log_period=1",
        ],
        tmp_path,
        env,
    )
    log, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, log[-4000:]
    assert "World size: 2" in log
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 1
    assert not any(k.startswith("module.") for k in final["model"])
    # The evaluation ran across both processes and gathered all val images.
    assert "Start inference on 1 batches" in log  # 2 val images split over 2 ranks
    assert "Task: bbox" in log


def test_single_view_tta_equals_plain_inference(root):
    cfg = _cfg(["model.roi_heads.override_score_thresh=0.0"])
    model = instantiate(cfg.model).eval()
    d = DatasetCatalog.get("toy_coco_val")[0]
    from detectron2.data.detection_utils import read_image

    img = torch.as_tensor(read_image(d["file_name"], "RGB").transpose(2, 0, 1).copy())
    inp = {"image": img, "height": 128, "width": 128}
    tta = EVAGeneralizedRCNNWithTTA(model, min_sizes=[128], max_size=128, flip=False)
    with torch.no_grad():
        plain = model([dict(inp)])[0]["instances"]
        aug = tta([dict(inp)])[0]["instances"]
    assert len(plain) > 0 and len(aug) == len(plain)
    order_p, order_a = plain.scores.argsort(descending=True), aug.scores.argsort(descending=True)
    assert torch.allclose(plain.scores[order_p], aug.scores[order_a], atol=1e-5)
    assert torch.allclose(plain.pred_boxes.tensor[order_p], aug.pred_boxes.tensor[order_a], atol=1e-3)
    agree = (plain.pred_masks[order_p] == aug.pred_masks[order_a]).float().mean()
    assert agree > 0.99
    flipped = EVAGeneralizedRCNNWithTTA(model, min_sizes=[96, 128], max_size=128, flip=True)
    with torch.no_grad():
        multi = flipped([dict(inp)])[0]["instances"]
    assert len(multi) > 0 and multi.pred_masks.shape[-2:] == (128, 128)


# ------------------------------------------------------------------------------ EMA as released
DECAY = 0.9999


def _fine_tune_cfg(out_dir, init, max_iter):
    cfg = _cfg(
        [
            f"train.output_dir={out_dir}",
            f"train.init_checkpoint={init}",
            f"train.max_iter={max_iter}",
            "train.checkpointer.period=100",
            "train.log_period=1",
            "dataloader.evaluator=null",
            "train.model_ema.enabled=True",
            f"train.model_ema.decay={DECAY}",
            "optimizer.lr=0.01",  # a visible first step (Adam moves each weight by about lr)
            "lr_multiplier.warmup_length=0.0",
        ]
    )
    from functools import partial

    from det.lr_decay import eva02_lr_factor

    cfg.optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=0.9, num_layers=2)
    return cfg


def _floats(state):
    return {k: v.double() for k, v in state.items() if v.dtype.is_floating_point}


def _assert_one_ema_step(ema, start, weights, what):
    """``ema == DECAY * start + (1 - DECAY) * weights`` for every float tensor."""
    for k, w in weights.items():
        want = start[k] + (1 - DECAY) * (w - start[k])
        assert torch.allclose(ema[k].double(), want, rtol=0, atol=2e-6), (what, k)


def test_ema_starts_from_the_loaded_weights_and_resumes_from_the_saved_ema(root, tmp_path):
    torch.manual_seed(123)
    init_model = instantiate(_cfg([]).model)
    torch.save({"model": init_model.state_dict()}, tmp_path / "init.pth")
    reference = instantiate(_cfg([]).model)  # loaded the way training loads it
    load_weights(reference, str(tmp_path / "init.pth"))
    loaded = _floats(reference.state_dict())

    torch.manual_seed(0)  # training builds its model from another random init
    do_train(_fine_tune_cfg(tmp_path / "run", tmp_path / "init.pth", max_iter=1))
    first = torch.load(tmp_path / "run/model_final.pth", map_location="cpu", weights_only=True)
    weights, ema = _floats(first["model"]), _floats(first["ema_state"])
    step = max((weights[k] - loaded[k]).abs().max().item() for k in loaded)
    assert step > 1e-3  # the optimizer moved the weights
    # One step after loading: EMA = 0.9999 * loaded + 0.0001 * updated, i.e. the loaded weights
    # up to 1e-4 of the update (a random-init start would be off by the whole init difference).
    _assert_one_ema_step(ema, loaded, weights, "from init_checkpoint")
    for k in loaded:
        assert (ema[k] - loaded[k]).abs().max().item() <= (1 - DECAY) * step + 2e-6, k

    # --resume: the EMA continues from the checkpoint's ema_state, not from its model weights.
    do_train(_fine_tune_cfg(tmp_path / "run", tmp_path / "init.pth", max_iter=2), resume=True)
    second = torch.load(tmp_path / "run/model_final.pth", map_location="cpu", weights_only=True)
    assert second["iteration"] == 1
    weights2, ema2 = _floats(second["model"]), _floats(second["ema_state"])
    _assert_one_ema_step(ema2, ema, weights2, "resumed")
    restarted = {k: weights[k] + (1 - DECAY) * (weights2[k] - weights[k]) for k in weights}
    assert max((ema2[k] - restarted[k]).abs().max().item() for k in weights) > 1e-3


# ------------------------------------------------------------------------ TTA keeps the row's post-processing
MASK_BIAS = [0.2, 4.0, 1.0, -1.0, 2.0]  # uniform mask logit per class: maskness sigmoid(b) if > 0.5


def _fixed_mask_model(cfg):
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        model.roi_heads.mask_head.predictor.weight.zero_()
        model.roi_heads.mask_head.predictor.bias.copy_(torch.tensor(MASK_BIAS))
    return model


def _val_input():
    from detectron2.data.detection_utils import read_image

    d = DatasetCatalog.get("toy_coco_val")[0]
    img = torch.as_tensor(read_image(d["file_name"], "RGB").transpose(2, 0, 1).copy())
    return {"image": img, "height": d["height"], "width": d["width"]}


def test_tta_applies_maskness_and_the_row_cap(root):
    from detectron2.config import get_cfg
    from detectron2.modeling import GeneralizedRCNNWithTTA
    from detectron2.modeling.test_time_augmentation import DatasetMapperTTA

    # Every view keeps all its detections, so the merged union is crowded.
    cfg = _cfg(["model.roi_heads.override_score_thresh=0.0", "model.roi_heads.test_topk_per_image=-1"])
    model = _fixed_mask_model(cfg)
    views = dict(min_sizes=[128], max_size=128, flip=True)
    inp = _val_input()

    # Reference: detectron2's own TTA boxes (NMS 0.5 merge of the views, uncapped), no maskness.
    d2cfg = get_cfg()
    d2cfg.MODEL.MASK_ON, d2cfg.MODEL.ROI_HEADS.NUM_CLASSES = False, 5
    d2cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST, d2cfg.TEST.DETECTIONS_PER_IMAGE = 0.5, -1
    d2cfg.INPUT.FORMAT = "RGB"
    plain = GeneralizedRCNNWithTTA(d2cfg, model, tta_mapper=DatasetMapperTTA(**views), batch_size=1)
    with torch.no_grad():
        ref = plain([dict(inp)])[0]["instances"]
    assert len(ref) > 100
    mask_score = torch.tensor([1 / (1 + math.exp(-b)) for b in MASK_BIAS])
    mask_score[mask_score <= 0.5] = 0
    rescored = (ref.scores * mask_score[ref.pred_classes]).sort(descending=True).values

    model.roi_heads.maskness_thresh = 0.5  # a _maskness row
    with torch.no_grad():
        out = EVAGeneralizedRCNNWithTTA(model, **views, detections_per_image=100)([dict(inp)])[0]["instances"]
    # maskness from the averaged masks, on every merged detection, then the cap
    assert len(out) == 100
    assert out.scores.tolist() == pytest.approx(rescored[:100].tolist(), abs=1e-6)
    assert out.pred_masks.shape[-2:] == (inp["height"], inp["width"])
    # without maskness: detectron2's merge, capped
    model.roi_heads.maskness_thresh = None
    with torch.no_grad():
        out = EVAGeneralizedRCNNWithTTA(model, **views, detections_per_image=30)([dict(inp)])[0]["instances"]
    assert out.scores.tolist() == pytest.approx(ref.scores[:30].tolist(), abs=1e-6)
    assert len(out.pred_masks) == 30


def test_tta_cap_and_views_follow_the_row():
    rows = Path(__file__).resolve().parents[1] / "configs/det"
    caps = {
        "coco/eva02_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8_maskness.py": 100,
        "lvis/eva02_lvis_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8.py": 300,
        "o365_to_lvis/eva02_o365_to_lvis_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8.py": 1000,
    }
    for name, cap in caps.items():
        assert row_detection_cap(LazyConfig.load(str(rows / name))) == cap, name
    cfg = _cfg(["test.aug.max_size=320"])  # a view larger than the 256 square would be cropped
    with pytest.raises(ValueError, match="test.aug.max_size=320 exceeds model.backbone.square_pad=256"):
        tta_from_config(cfg, instantiate(cfg.model))
    cfg = _cfg(["test.aug.max_size=320", "model.backbone.square_pad=0"])
    assert tta_from_config(cfg, instantiate(cfg.model)).detections_per_image == 100


def test_tta_soft_nms_merge_by_hand(root):
    cfg = _cfg([])
    from det.recipe import use_released_soft_nms

    use_released_soft_nms(cfg.model)
    tta = EVAGeneralizedRCNNWithTTA(
        instantiate(cfg.model), min_sizes=[128], max_size=128, flip=False, merge="soft_nms"
    )
    boxes = torch.tensor([[0, 0, 12, 12], [1, 0, 13, 12], [40, 40, 52, 52], [1, 0, 13, 12.0]])
    scores = [torch.tensor(0.9), torch.tensor(0.8), torch.tensor(0.7), torch.tensor(0.6)]
    classes = [torch.tensor(0), torch.tensor(0), torch.tensor(0), torch.tensor(1)]
    merged = tta._merge_detections(boxes, scores, classes, (64, 64))
    iou = 132 / 156  # > 0.6: linear decay by 1 - IoU; the class-1 twin is untouched (class-wise)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.8 * (1 - iou)], abs=1e-6)
    assert merged.pred_classes.tolist() == [0, 0, 1, 0]
