"""Test-dev result files: server naming, dataset id space, validation errors, loadable by pycocotools."""

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

import det  # noqa: F401
from det.datasets import register_all
from det.testdev import SubmissionError, TestDevWriter, validate_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_toy_data  # noqa: E402

NAME = "detections_test-dev2017_unit_results.json"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    make_toy_data.generate(out, num_train=4, num_val=2, num_test=3, size=64, max_objects=2, seed=3)
    register_all(out, overwrite=True)
    return out


def _outputs(images, rng):
    inputs, outputs = [], []
    for img in images:
        n = 3
        inst = Instances((img["height"], img["width"]))
        xy = torch.tensor(rng.uniform(0, 30, (n, 2)), dtype=torch.float32)
        inst.pred_boxes = Boxes(torch.cat([xy, xy + 20], 1))
        inst.scores = torch.tensor([0.3, 0.9, 0.6])
        inst.pred_classes = torch.tensor([4, 0, 2])
        masks = torch.zeros(n, img["height"], img["width"], dtype=torch.bool)
        masks[:, 10:30, 10:30] = True
        inst.pred_masks = masks
        inputs.append({"image_id": img["id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_writer_files_load_with_pycocotools(root, tmp_path):
    DatasetCatalog.get("toy_coco_test-dev")  # sets the id mapping from the image-info file
    info_file = MetadataCatalog.get("toy_coco_test-dev").json_file
    info = json.loads(Path(info_file).read_text())
    writer = TestDevWriter("toy_coco_test-dev", tmp_path, "unit")
    writer.reset()
    writer.process(*_outputs(info["images"], np.random.default_rng(0)))
    result = writer.evaluate()["submission"]
    gt = COCO(info_file)
    for task in ("bbox", "segm"):
        path = tmp_path / task / NAME
        assert Path(result[task]["file"]) == path
        with zipfile.ZipFile(path.with_suffix(".zip")) as z:
            assert z.namelist() == [NAME]
            assert json.loads(z.read(NAME)) == json.loads(path.read_text())
        dets = json.loads(path.read_text())
        assert len(dets) == 3 * len(info["images"])
        # Contiguous classes 4, 0, 2 -> the dataset's own ids 9, 1, 5; best score first in each image.
        first = [d for d in dets if d["image_id"] == info["images"][0]["id"]]
        assert [d["category_id"] for d in first] == [1, 5, 9]
        assert [d["score"] for d in first] == pytest.approx([0.9, 0.6, 0.3])
        assert ("segmentation" in dets[0]) == (task == "segm")
        res = gt.loadRes(str(path))
        assert len(res.getAnnIds()) == len(dets)
        if task == "segm":
            assert res.loadAnns(res.getAnnIds()[:1])[0]["area"] == 400
        else:
            box = dets[0]["bbox"]
            assert box[2] == pytest.approx(20) and box[3] == pytest.approx(20)  # xywh


def _valid(info):
    img = info["images"][0]
    return [{"image_id": img["id"], "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9}]


def test_validation_errors(root):
    info = json.loads((root / "toy_coco/annotations/image_info_test-dev.json").read_text())
    ids = [i["id"] for i in info["images"]]
    validate_results(_valid(info), info, ids, "bbox")
    with pytest.raises(SubmissionError, match="not processed"):
        validate_results(_valid(info), info, ids[:-1], "bbox")
    foreign = _valid(info)
    foreign[0]["category_id"] = 2  # a contiguous index, not a toy category id
    with pytest.raises(SubmissionError, match="category_id 2"):
        validate_results(foreign, info, ids, "bbox")
    nan = _valid(info)
    nan[0]["score"] = math.nan
    with pytest.raises(SubmissionError, match="score"):
        validate_results(nan, info, ids, "bbox")
    unsorted = _valid(info) + [dict(_valid(info)[0], score=0.95)]
    with pytest.raises(SubmissionError, match="sorted"):
        validate_results(unsorted, info, ids, "bbox")
    with pytest.raises(SubmissionError, match="RLE"):
        validate_results(_valid(info), info, ids, "segm")


def test_submission_tool_end_to_end(root, tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="2")
    cmd = [
        sys.executable,
        str(ROOT / "tools/testdev_submission.py"),
        "--config-file",
        str(ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"),
        "--output",
        str(tmp_path),
        "--name",
        "tiny",
        "dataloader.test.dataset.names=toy_coco_test-dev",
        "train.device=cpu",
        "model.backbone.net.depth=2",
        "model.backbone.net.window_block_indexes=[0]",
        "model.roi_heads.override_score_thresh=0.0",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    gt = COCO(str(root / "toy_coco/annotations/image_info_test-dev.json"))
    for task in ("bbox", "segm"):
        path = tmp_path / task / "detections_test-dev2017_tiny_results.json"
        dets = json.loads(path.read_text())
        assert dets and {d["category_id"] for d in dets} <= {1, 3, 5, 7, 9}
        assert len(gt.loadRes(str(path)).getAnnIds()) == len(dets)
        assert path.with_suffix(".zip").is_file()
