"""Segmenter --resume continues exactly like the uninterrupted run on CPU (RNGStateHook + mmengine's
data-stream skip): bit-identical weights and optimizer state."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from state_diff import max_diff

import seg  # noqa: F401  (lets torch.load read mmengine checkpoints in safe mode)
import toydata

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/seg/toy/upernet_eva02_tiny_toy.py")


def _train(work: Path, data: Path, iters: int, *extra: str) -> None:
    opts = [
        *(f"{k}_dataloader.dataset.data_root={data}" for k in ("train", "val", "test")),
        f"train_cfg.max_iters={iters}",
        "train_cfg.val_interval=1000",
        "param_scheduler.0.end=3",
        "param_scheduler.1.end=5",  # the same schedule for the interrupted and the straight run
        "default_hooks.checkpoint.interval=2",
        "default_hooks.checkpoint.max_keep_ckpts=-1",
        "default_hooks.logger.interval=1",
        "model.backbone.drop_path_rate=0.2",  # the model draws from the torch RNG
        "train_dataloader.batch_size=2",
        "train_dataloader.num_workers=0",
        "train_dataloader.persistent_workers=False",
    ]
    args = [
        sys.executable,
        "tools/seg_train.py",
        CONFIG,
        "--work-dir",
        str(work),
        *extra,
        "--cfg-options",
        *opts,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_resume_equals_the_uninterrupted_run(tmp_path):
    toydata.generate(tmp_path, num_train=8, num_val=1, num_test=1, size=64, max_objects=2, seed=3)
    data = tmp_path / "toy_ade"
    _train(tmp_path / "straight", data, 4)
    _train(tmp_path / "split", data, 2)  # "killed" after the checkpoint of iteration 2
    _train(tmp_path / "split", data, 4, "--resume")
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    straight, resumed = load(tmp_path / "straight/iter_4.pth"), load(tmp_path / "split/iter_4.pth")
    half = load(tmp_path / "split/iter_2.pth")
    assert resumed["meta"]["iter"] == 4
    assert max_diff(straight["state_dict"], half["state_dict"]) > 1e-5  # iterations 3-4 moved the weights
    assert max_diff(straight["state_dict"], resumed["state_dict"]) == 0.0
    assert max_diff(straight["optimizer"], resumed["optimizer"]) == 0.0
