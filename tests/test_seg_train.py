"""End-to-end through the tools: toy training lowers the loss, --resume continues, testing with
sliding windows / TTA / painted predictions, inference on images, and 2-process gloo training."""

from __future__ import annotations

import glob
import json
import os
import os.path as osp
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch

import seg  # noqa: F401  (safe loading of mmengine checkpoints)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, "configs/seg/toy/upernet_eva02_tiny_toy.py")
PY = sys.executable


def _run(args: list[str], cwd: str, timeout: int = 300, env: dict | None = None) -> str:
    proc = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("seg_toy")
    _run(
        [
            PY,
            osp.join(ROOT, "tools/make_toy_data.py"),
            "--out",
            str(out),
            "--num-train",
            "24",
            "--num-val",
            "4",
            "--num-test",
            "1",
            "--size",
            "128",
            "--max-objects",
            "3",
        ],
        cwd=ROOT,
    )
    return str(out / "toy_ade")


def _opts(data_root: str, iters: int, ckpt_every: int, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "--cfg-options",
        f"train_dataloader.dataset.data_root={data_root}",
        f"val_dataloader.dataset.data_root={data_root}",
        f"test_dataloader.dataset.data_root={data_root}",
        f"train_cfg.max_iters={iters}",
        f"train_cfg.val_interval={iters}",
        "param_scheduler.0.end=6",  # short warm-up so that a few dozen iterations already learn
        f"param_scheduler.1.end={iters + 1}",
        f"default_hooks.checkpoint.interval={ckpt_every}",
        "default_hooks.logger.interval=1",
        "default_hooks.checkpoint.max_keep_ckpts=-1",
        *extra,
    ]


def _scalars(work_dir: str) -> list[dict]:
    """Per-iteration training records of the latest run in ``work_dir``."""
    path = sorted(glob.glob(osp.join(work_dir, "*", "vis_data", "scalars.json")))[-1]
    rows = [json.loads(line) for line in open(path)]
    return [r for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory) -> tuple[str, str]:
    work = str(tmp_path_factory.mktemp("seg_train"))
    _run([PY, "tools/seg_train.py", CONFIG, "--work-dir", work, *_opts(toy, 24, 12)], cwd=ROOT)
    return toy, work


def test_toy_training_lowers_the_loss(trained):
    _, work = trained
    rows = _scalars(work)
    assert [r["iter"] for r in rows] == list(range(1, 25))
    first = sum(r["decode.loss_ce"] for r in rows[:4]) / 4
    last = sum(r["decode.loss_ce"] for r in rows[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    ckpt = torch.load(osp.join(work, "iter_24.pth"))  # safe loader (weights_only) reads mmengine's own file
    assert ckpt["meta"]["iter"] == 24
    assert set(ckpt["meta"]["dataset_meta"]["classes"]) >= {"background", "circle", "cross"}


def test_resume_continues_iteration_optimizer_and_scheduler(trained, tmp_path):
    toy, work = trained
    resumed = str(tmp_path / "resumed")
    shutil.copytree(work, resumed)
    os.remove(osp.join(resumed, "iter_24.pth"))  # resume from iteration 12
    with open(osp.join(resumed, "last_checkpoint"), "w") as f:
        f.write(osp.join(resumed, "iter_12.pth"))
    before = torch.load(osp.join(resumed, "iter_12.pth"))
    _run([PY, "tools/seg_train.py", CONFIG, "--work-dir", resumed, "--resume", *_opts(toy, 24, 12)], cwd=ROOT)
    rows = _scalars(resumed)
    assert [r["iter"] for r in rows] == list(range(13, 25))  # continues, does not restart at 1
    after = torch.load(osp.join(resumed, "iter_24.pth"))
    assert after["meta"]["iter"] == 24
    step = lambda ck: float(next(iter(ck["optimizer"]["state"].values()))["step"])  # noqa: E731
    assert step(before) == 12 and step(after) == 24  # AdamW state carried over, not re-created
    # LinearLR (warm-up, end=6) stopped at step 5; PolyLR kept counting to 24
    assert [s["last_step"] for s in after["param_schedulers"]] == [5, 24]
    # logged lr = first parameter group (embeddings: scale 0.9 ** 7, 6 blocks) of the toy config (lr 1e-3);
    # the warm-up ended at 5, the linear decay continues from where it stopped: 1 - (i - 1) / 24
    lr = {r["iter"]: r["lr"] for r in rows}
    for it in (13, 18, 24):
        assert lr[it] == pytest.approx(1e-3 * 0.9**7 * (1 - (it - 1) / 24), rel=1e-3), it


def test_seg_test_slide_tta_and_painted_predictions(trained, tmp_path):
    toy, work = trained
    ckpt = osp.join(work, "iter_24.pth")
    opts = ["--cfg-options", *(f"{k}_dataloader.dataset.data_root={toy}" for k in ("train", "val", "test"))]
    out = _run(
        [
            PY,
            "tools/seg_test.py",
            CONFIG,
            ckpt,
            "--work-dir",
            str(tmp_path / "t"),
            "--show-dir",
            str(tmp_path / "vis"),
            *opts,
        ],
        cwd=ROOT,
    )
    assert re.search(r"mIoU: [0-9.]+", out), out[-2000:]
    painted = glob.glob(str(tmp_path / "vis" / "**" / "*.png"), recursive=True)
    assert len(painted) == 4
    out = _run(
        # 3 scales x 2 flips of one image (`indices`: the first N samples of the dataset) keeps it short
        [
            PY,
            "tools/seg_test.py",
            CONFIG,
            ckpt,
            "--tta",
            "--work-dir",
            str(tmp_path / "tta"),
            *opts,
            "test_dataloader.dataset.indices=1",
        ],
        cwd=ROOT,
    )
    assert "Iter(test) [1/1]" in out
    assert re.search(r"mIoU: [0-9.]+", out), out[-2000:]
    images = sorted(glob.glob(osp.join(toy, "images", "validation", "*.jpg")))[:1]
    _run([PY, "tools/seg_infer.py", CONFIG, ckpt, *images, "--out-dir", str(tmp_path / "pics")], cwd=ROOT)
    import cv2
    import numpy as np

    for img in images:
        stem = osp.splitext(osp.basename(img))[0]
        labels = cv2.imread(str(tmp_path / "pics" / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / "pics" / f"{stem}_mask.png"))[..., ::-1]
        assert labels.shape == mask.shape[:2] == (128, 128) and labels.max() < 6
        palette = np.array(torch.load(ckpt)["meta"]["dataset_meta"]["palette"], np.uint8)
        assert (mask == palette[labels]).all()
        assert osp.isfile(tmp_path / "pics" / f"{stem}_overlay.png")


def test_two_process_gloo_training(toy, tmp_path):
    work = str(tmp_path / "ddp")
    with socket.socket() as sock:  # a free port: fixed ones collide with other jobs on the machine
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [PY, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    out = _run(
        [
            *torchrun,
            "tools/seg_train.py",
            CONFIG,
            "--launcher",
            "pytorch",
            "--work-dir",
            work,
            *_opts(toy, 4, 4, ("train_dataloader.batch_size=2",)),
        ],
        cwd=ROOT,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert "Distributed training: True" in out
    assert re.search(r"world_size:\s*2", out) or "GPU number: 2" in out, out[-3000:]
    ckpt = torch.load(osp.join(work, "iter_4.pth"))
    assert ckpt["meta"]["iter"] == 4
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
