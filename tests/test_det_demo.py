"""tools/demo.py draws predictions of a lazy-config model onto the input pictures."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate

import det  # noqa: F401
import toydata

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"

SMALL = ["model.backbone.net.depth=2", "model.backbone.net.window_block_indexes=[0]", "train.device=cpu"]


def test_demo_writes_drawn_pictures(tmp_path):
    toydata.generate(tmp_path / "data", num_train=1, num_val=2, num_test=1, size=96, max_objects=2, seed=6)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(TOY)), SMALL)
    torch.save({"model": instantiate(cfg.model).state_dict()}, tmp_path / "w.pth")
    images = sorted((tmp_path / "data/toy_coco/val").glob("*.jpg"))
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "data"))
    cmd = [
        sys.executable,
        str(ROOT / "tools/demo.py"),
        "--config-file",
        str(TOY),
        "--weights",
        str(tmp_path / "w.pth"),
        "--input",
        str(tmp_path / "data/toy_coco/val/*.jpg"),
        "--output",
        str(tmp_path / "out"),
        "--confidence-threshold",
        "0.0",
        *SMALL,
        "model.roi_heads.override_score_thresh=0.0",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for src in images:
        drawn = cv2.imread(str(tmp_path / "out" / f"{src.stem}.jpg"))
        original = cv2.imread(str(src))
        assert drawn is not None and drawn.shape == original.shape
        # An untrained model with threshold 0 still yields detections: boxes/masks are drawn.
        assert np.abs(drawn.astype(int) - original.astype(int)).mean() > 1.0
    assert "detections" in r.stdout
    bad = subprocess.run(
        [*cmd[:6], "--input", str(tmp_path / "missing.jpg"), "--output", str(tmp_path / "o2")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0 and "missing.jpg" in bad.stderr
