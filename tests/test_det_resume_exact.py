"""Detector --resume continues exactly like the uninterrupted run on CPU: same data order, same random
draws (drop path, RoI sampling, augmentation), hence bit-identical weights and optimizer state."""

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.utils.env import seed_all_rng
from state_diff import max_diff

import det  # noqa: F401
import toydata
from det.datasets import register_all
from det.engine import apply_overrides, do_train

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"
SMALL = [
    "model.backbone.net.depth=2",
    "model.backbone.net.window_block_indexes=[0]",
    "model.backbone.net.drop_path_rate=0.2",  # a random draw in every block
    "model.roi_heads.batch_size_per_image=16",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.evaluator=null",
    "train.device=cpu",
    "train.max_iter=4",
    "train.checkpointer.period=100",
    "train.log_period=1",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toydata.generate(out, num_train=12, num_val=1, num_test=1, size=96, max_objects=3, seed=5)
    register_all(out, overwrite=True)
    return out


def _train(out: Path, *extra: str, resume: bool = False) -> dict:
    seed_all_rng(0)  # what default_setup does with train.seed=0, at the start of every process
    cfg = apply_overrides(LazyConfig.load(str(TOY)), [*SMALL, f"train.output_dir={out}", *extra])
    do_train(cfg, resume=resume)
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)


def test_resume_equals_the_uninterrupted_run(root, tmp_path):
    straight = _train(tmp_path / "straight")
    first = _train(tmp_path / "split", "+train.stop_after=2")
    assert first["iteration"] == 1  # two iterations done, the checkpoint written
    resumed = _train(tmp_path / "split", resume=True)
    assert straight["iteration"] == resumed["iteration"] == 3
    moved = max_diff(straight["model"], first["model"], equal_leaves=True)
    assert moved > 1e-4  # the last two iterations changed the weights
    assert max_diff(straight["model"], resumed["model"], equal_leaves=True) == 0.0
    assert "optimizer" in straight["trainer"]  # optimizer, scheduler and iteration, all equal
    assert max_diff(straight["trainer"], resumed["trainer"], equal_leaves=True) == 0.0
