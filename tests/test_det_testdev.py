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
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

import det  # noqa: F401
import toydata
from det.datasets import register_all
from det.testdev import (
    SubmissionError,
    TestDevWriter,
    run_submission,
    submission_argument_parser,
    validate_results,
)

ROOT = Path(__file__).resolve().parents[1]

NAME = "detections_test-dev2017_unit_results.json"
TOY = ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"
# A 2-block toy detector on CPU, the best 20 detections of a random model, on toy test-dev.
SMALL = [
    "train.device=cpu",
    "model.backbone.net.depth=2",
    "model.backbone.net.window_block_indexes=[0]",
    "model.roi_heads.override_score_thresh=0.0",
    "model.roi_heads.test_topk_per_image=20",
    "dataloader.test.dataset.names=toy_coco_test-dev",
    "dataloader.test.num_workers=0",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toydata.generate(out, num_train=4, num_val=2, num_test=3, size=64, max_objects=2, seed=3)
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
    result = writer.evaluate()
    gt = COCO(info_file)
    for task in ("bbox", "segm"):
        path = tmp_path / task / NAME
        assert writer.files[task] == path
        assert result[f"submission/{task}"] == {
            "detections": 3 * len(info["images"]),
            "images": len(info["images"]),
        }
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


def test_writer_keeps_the_best_per_image(root, tmp_path):
    DatasetCatalog.get("toy_coco_test-dev")
    info = json.loads(Path(MetadataCatalog.get("toy_coco_test-dev").json_file).read_text())
    writer = TestDevWriter("toy_coco_test-dev", tmp_path, "unit", tasks=["bbox"], max_dets_per_image=2)
    writer.process(*_outputs(info["images"], np.random.default_rng(0)))
    assert writer.evaluate()["submission/bbox"]["detections"] == 2 * len(info["images"])
    dets = json.loads((tmp_path / "bbox" / NAME).read_text())
    assert sorted({d["score"] for d in dets}) == pytest.approx([0.6, 0.9])


def test_submission_tool_end_to_end(root, tmp_path):
    """The command line, with detectron2's distributed flags: two gloo processes share the images."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        str(ROOT / "tools/testdev_submission.py"),
        "--config-file",
        str(TOY),
        "--output",
        str(tmp_path),
        "--name",
        "tiny",
        "--num-gpus",
        "2",
        "--num-machines",
        "1",
        "--machine-rank",
        "0",
        "--dist-url",
        "auto",
        *SMALL,
        f"train.output_dir={tmp_path / 'log'}",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "World size: 2" in r.stdout + r.stderr
    gt = COCO(str(root / "toy_coco/annotations/image_info_test-dev.json"))
    for task in ("bbox", "segm"):
        path = tmp_path / task / "detections_test-dev2017_tiny_results.json"
        dets = json.loads(path.read_text())
        assert {d["image_id"] for d in dets} == set(gt.getImgIds())  # both ranks' images
        assert dets and {d["category_id"] for d in dets} <= {1, 3, 5, 7, 9}
        assert len(gt.loadRes(str(path)).getAnnIds()) == len(dets)
        assert path.with_suffix(".zip").is_file()
        assert f"{task}: {len(dets)} detections on 3 images" in r.stdout


def _reference(cfg, weights, tta, out_dir):
    """Detections of ``weights`` run directly through the test loader into the writer."""
    from det.tta import tta_from_config

    model = instantiate(cfg.model).eval()
    model.load_state_dict(weights)
    runner = tta_from_config(cfg, model) if tta else model
    writer = TestDevWriter("toy_coco_test-dev", out_dir, "ref", tasks=["bbox"])
    with torch.no_grad():
        inference_on_dataset(runner, instantiate(cfg.dataloader.test), writer)
    return json.loads(writer.files["bbox"].read_text())


def _same(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if (x["image_id"], x["category_id"]) != (y["image_id"], y["category_id"]):
            return False
        if x["score"] != pytest.approx(y["score"], abs=1e-5) or x["bbox"] != pytest.approx(
            y["bbox"], abs=1e-3
        ):
            return False
    return True


def test_submission_is_the_evaluated_model_ema_and_tta(root, tmp_path):
    base = LazyConfig.apply_overrides(LazyConfig.load(str(TOY)), SMALL)
    torch.manual_seed(1)
    trained = instantiate(base.model).state_dict()
    torch.manual_seed(2)
    averaged = instantiate(base.model).state_dict()
    ckpt = tmp_path / "ema_run.pth"
    torch.save({"model": trained, "ema_state": averaged}, ckpt)
    ema_row = [
        *SMALL,
        f"train.init_checkpoint={ckpt}",
        "train.model_ema.enabled=True",
        "train.model_ema.use_ema_weights_for_eval_only=True",
        f"train.output_dir={tmp_path / 'log'}",
    ]
    tta = ["test.aug.enabled=True", "test.aug.min_sizes=[64]", "test.aug.max_size=64"]  # + flip
    runs = {"ema": ema_row, "ematta": ema_row + tta}
    for name, opts in runs.items():
        flags = ["--num-gpus", "1", "--num-machines", "1", "--machine-rank", "0", "--dist-url", "auto"]
        argv = [
            "--config-file",
            str(TOY),
            "--output",
            str(tmp_path / name),
            "--name",
            name,
            "--tasks",
            "bbox",
        ]
        run_submission(submission_argument_parser().parse_args(argv + flags + opts))  # the tool, one process
    written = {
        name: json.loads(
            (tmp_path / name / "bbox" / f"detections_test-dev2017_{name}_results.json").read_text()
        )
        for name in runs
    }
    cfg = LazyConfig.apply_overrides(LazyConfig.load(str(TOY)), ema_row + tta)
    ema_plain = _reference(cfg, averaged, tta=False, out_dir=tmp_path / "r1")
    ema_tta = _reference(cfg, averaged, tta=True, out_dir=tmp_path / "r2")
    model_plain = _reference(cfg, trained, tta=False, out_dir=tmp_path / "r3")
    assert written["ema"] and written["ematta"]
    assert _same(written["ema"], ema_plain) and not _same(written["ema"], model_plain)
    assert _same(written["ematta"], ema_tta) and not _same(written["ematta"], ema_plain)
