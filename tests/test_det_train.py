"""Training on the toy set: the loss goes down, EMA, --resume after an interruption, 2-process gloo DDP,
and test-time augmentation."""

import json
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
from det.datasets import register_all
from det.ema import ModelEMA
from det.engine import do_train
from det.tta import build_tta_model

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"
TRAIN = ROOT / "tools/lazyconfig_train_net.py"
sys.path.insert(0, str(ROOT / "tools"))
import make_toy_data  # noqa: E402

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
    make_toy_data.generate(out, num_train=16, num_val=2, num_test=1, size=128, max_objects=3, seed=4)
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
            "train.max_iter=12",
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
    assert state["iteration"] == 11
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
    tta = build_tta_model(model, min_sizes=[128], max_size=1000, flip=False)
    with torch.no_grad():
        plain = model([dict(inp)])[0]["instances"]
        aug = tta([dict(inp)])[0]["instances"]
    assert len(plain) > 0 and len(aug) == len(plain)
    order_p, order_a = plain.scores.argsort(descending=True), aug.scores.argsort(descending=True)
    assert torch.allclose(plain.scores[order_p], aug.scores[order_a], atol=1e-5)
    assert torch.allclose(plain.pred_boxes.tensor[order_p], aug.pred_boxes.tensor[order_a], atol=1e-3)
    agree = (plain.pred_masks[order_p] == aug.pred_masks[order_a]).float().mean()
    assert agree > 0.99
    flipped = build_tta_model(model, min_sizes=[96, 128], max_size=1000, flip=True)
    with torch.no_grad():
        multi = flipped([dict(inp)])[0]["instances"]
    assert len(multi) > 0 and multi.pred_masks.shape[-2:] == (128, 128)
