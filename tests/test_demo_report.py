"""The demo summary: figures read back from detectron2 / mmengine metric files, summary.json, picture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from toydata.report import det_curves, record_step, seg_curves, write_summary

ROOT = Path(__file__).resolve().parents[1]


def _write_lines(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _det_run(folder: Path, ap: float) -> Path:
    # detectron2's JSONWriter: 0-based "iteration"; an evaluation row carries "bbox/AP" etc.
    rows = [
        {"iteration": 19, "total_loss": 4.5, "lr": 1e-4},
        {"iteration": 39, "total_loss": 3.0},
        {"iteration": 39, "bbox/AP": ap / 2, "segm/AP": ap / 3},
        {"iteration": 59, "total_loss": 2.0},
        {"iteration": 59, "bbox/AP": ap, "segm/AP": ap - 5},
        # a resumed run appends its rows again; the last row per iteration wins
        {"iteration": 59, "bbox/AP": ap, "segm/AP": ap - 5},
    ]
    return _write_lines(folder / "metrics.json", rows)


def test_det_curves_read_detectron2_metrics(tmp_path):
    curves, metrics = det_curves(_det_run(tmp_path, 80.0))
    assert metrics == {"bbox_AP": 80.0, "segm_AP": 75.0}
    assert curves["loss"] == [[20, 4.5], [40, 3.0], [60, 2.0]]
    assert curves["bbox_AP"] == [[40, 40.0], [60, 80.0]]


def test_det_curves_refuse_a_run_without_evaluation(tmp_path):
    path = _write_lines(tmp_path / "metrics.json", [{"iteration": 0, "total_loss": 1.0}])
    with pytest.raises(ValueError, match="no evaluation"):
        det_curves(path)


def test_seg_curves_read_the_newest_mmengine_scalars(tmp_path):
    _write_lines(tmp_path / "20260101_000000/vis_data/scalars.json", [{"mIoU": 1.0, "step": 5}])
    rows = [
        {"lr": 1e-3, "loss": 1.25, "iter": 20, "step": 20},
        {"lr": 1e-3, "loss": 0.5, "iter": 40, "step": 40},
        {"aAcc": 97.0, "mIoU": 81.5, "mAcc": 88.0, "step": 40},
    ]
    _write_lines(tmp_path / "20260102_000000/vis_data/scalars.json", rows)
    curves, metrics = seg_curves(tmp_path)
    assert metrics == {"mIoU": 81.5}
    assert curves == {"loss": [[20, 1.25], [40, 0.5]], "mIoU": [[40, 81.5]]}


def test_record_step_refuses_non_finite_figures(tmp_path):
    with pytest.raises(ValueError, match="'bbox_AP' = nan"):
        record_step(tmp_path, "det", seconds=1.0, metrics={"bbox_AP": float("nan")})


def test_summary_json_has_the_documented_names_and_sums_the_seconds(tmp_path):
    record_step(tmp_path, "seg", seconds=20.04, metrics={"mIoU": 85.0}, finished=1020.04)
    record_step(tmp_path, "det", seconds=100.0, metrics={"bbox_AP": 81.0, "segm_AP": 79.0}, finished=1120.04)
    summary, table = write_summary(tmp_path, ["backbone", "det", "seg", "chain"])
    assert [s["name"] for s in summary["steps"]] == ["det", "seg"]  # the demo's order
    assert summary["steps"][0]["metrics"] == {"bbox_AP": 81.0, "segm_AP": 79.0}
    assert summary["total_seconds"] == 120.0  # 1000.0 to 1120.04, to 0.1 s
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert "bbox_AP 81.0" in table and "mIoU 85.0" in table and "overlap" not in table


def test_summary_total_is_the_wall_clock_when_steps_run_side_by_side(tmp_path):
    # seg 0-200 s, then det 200-900 s and chain 240-960 s side by side: 960 s, not 1620
    record_step(tmp_path, "seg", seconds=200.0, metrics={"mIoU": 85.0}, finished=1200.0)
    record_step(tmp_path, "det", seconds=700.0, metrics={"bbox_AP": 81.0}, finished=1900.0)
    record_step(tmp_path, "chain", seconds=720.0, metrics={"bbox_AP": 80.0}, finished=1960.0)
    summary, table = write_summary(tmp_path, ["det", "seg", "chain"])
    assert summary["total_seconds"] == pytest.approx(960.0)
    assert [s["seconds"] for s in summary["steps"]] == [700.0, 200.0, 720.0]
    assert "wall clock (steps overlap)" in table


def test_summary_tool_draws_ground_truth_prediction_and_curves(tmp_path):
    import toydata

    data = tmp_path / "data"
    toydata.generate(data, num_train=1, num_val=2, num_test=1, size=64, max_objects=2, seed=3)
    root = tmp_path / "demo"
    # a detection "prediction" picture per validation image, a seg ground truth | prediction picture
    pictures = root / "det/pictures"
    pictures.mkdir(parents=True)
    for image in sorted((data / "toy_coco/val").glob("*.jpg")):
        cv2.imwrite(str(pictures / image.name), np.full((64, 64, 3), 255, np.uint8))
    vis = root / "seg/vis/vis_data/vis_image"
    vis.mkdir(parents=True)
    cv2.imwrite(str(vis / "a.png"), np.zeros((64, 128, 3), np.uint8))
    det_curve, det_metrics = det_curves(_det_run(root / "det", 80.0))
    record_step(root, "det", seconds=1.0, metrics=det_metrics, curves=det_curve)
    out = subprocess.run(
        [sys.executable, "tools/demo_report.py", "--root", str(root), "summary", "--data", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "bbox_AP 80.0" in out.stdout
    picture = cv2.imread(str(root / "summary.png"))
    # 3 rows (ground truth, prediction, curves) x 3 columns (2 det pairs + 1 seg pair) at 90 dpi
    assert picture.shape[:2] == (864, 864)
    # the white "prediction" pictures are drawn; the ground truth shows the shapes, not white
    assert (picture > 250).all(axis=2).mean() > 0.3
