"""COCO and LVIS evaluation on the toy set through detectron2's evaluators (pycocotools / lvis),
checked against perfect predictions and against the evaluation libraries called directly."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, LVISEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import det  # noqa: F401  (applies the numpy shim lvis needs)
import toydata
from det.datasets import register_all

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toydata.generate(out, num_train=12, num_val=6, num_test=2, size=96, max_objects=3, seed=2)
    register_all(out, overwrite=True)
    dicts = DatasetCatalog.get("toy_coco_val")
    return dicts, COCO(str(out / "toy_coco/annotations/instances_val.json"))


def _predictions(dicts, api, shift: float, drop_every: int):
    """Ground truth turned into predictions: boxes/masks shifted by ``shift`` px, some dropped."""
    to_contig = MetadataCatalog.get("toy_coco_val").thing_dataset_id_to_contiguous_id
    rng = np.random.default_rng(0)
    inputs, outputs = [], []
    for d in dicts:
        anns = api.loadAnns(api.getAnnIds(imgIds=d["image_id"]))
        anns = [a for i, a in enumerate(anns) if drop_every == 0 or i % drop_every != 1]
        inst = Instances((d["height"], d["width"]))
        boxes = torch.tensor(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in anns
            ],
            dtype=torch.float32,
        ).reshape(-1, 4)
        inst.pred_boxes = Boxes(boxes + shift)
        inst.scores = torch.tensor(rng.uniform(0.5, 1.0, len(anns)), dtype=torch.float32)
        inst.pred_classes = torch.tensor([to_contig[a["category_id"]] for a in anns], dtype=torch.long)
        masks = [np.roll(api.annToMask(a), int(shift), axis=(0, 1)) for a in anns]
        inst.pred_masks = (
            torch.from_numpy(np.stack(masks).astype(bool))
            if masks
            else torch.zeros(0, d["height"], d["width"], dtype=torch.bool)
        )
        inputs.append({"image_id": d["image_id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def _run(evaluator, inputs, outputs):
    evaluator.reset()
    evaluator.process(inputs, copy.deepcopy(outputs))
    return evaluator.evaluate()


def test_coco_evaluator_perfect_and_against_pycocotools(val):
    dicts, api = val
    ev = COCOEvaluator("toy_coco_val", tasks=("bbox", "segm"), distributed=False, use_fast_impl=False)
    res = _run(ev, *_predictions(dicts, api, shift=0.0, drop_every=0))
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    assert res["segm"]["AP"] == pytest.approx(100.0)

    inputs, outputs = _predictions(dicts, api, shift=2.0, drop_every=3)
    res = _run(ev, inputs, outputs)
    assert 5.0 < res["bbox"]["AP"] < 95.0
    # Same numbers straight from pycocotools on the same detections.
    to_dataset = {
        v: k for k, v in MetadataCatalog.get("toy_coco_val").thing_dataset_id_to_contiguous_id.items()
    }
    for task in ("bbox", "segm"):
        dets = []
        for inp, out in zip(inputs, outputs):
            for r in instances_to_coco_json(out["instances"], inp["image_id"]):
                r["category_id"] = to_dataset[r["category_id"]]
                if task == "bbox":
                    r.pop("segmentation")
                dets.append(r)
        e = COCOeval(api, api.loadRes(dets), task)
        e.evaluate()
        e.accumulate()
        e.summarize()
        assert res[task]["AP"] == pytest.approx(100 * e.stats[0], abs=1e-6)
        assert res[task]["AP50"] == pytest.approx(100 * e.stats[1], abs=1e-6)


def test_lvis_evaluator_perfect_and_against_lvis(val):
    from lvis import LVIS, LVISEval, LVISResults

    dicts, api = val
    json_file = MetadataCatalog.get("toy_coco_val").json_file
    ev = LVISEvaluator("toy_coco_val", tasks=("bbox", "segm"), distributed=False, max_dets_per_image=300)
    res = _run(ev, *_predictions(dicts, api, shift=0.0, drop_every=0))
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    assert res["segm"]["AP"] == pytest.approx(100.0)

    inputs, outputs = _predictions(dicts, api, shift=2.0, drop_every=3)
    res = _run(ev, inputs, outputs)
    to_dataset = {
        v: k for k, v in MetadataCatalog.get("toy_coco_val").thing_dataset_id_to_contiguous_id.items()
    }
    dets = []
    for inp, out in zip(inputs, outputs):
        for r in instances_to_coco_json(out["instances"], inp["image_id"]):
            r["category_id"] = to_dataset[r["category_id"]]
            r.pop("segmentation")
            dets.append(r)
    gt = LVIS(json_file)
    e = LVISEval(gt, LVISResults(gt, dets, max_dets=300), "bbox")
    e.run()
    assert res["bbox"]["AP"] == pytest.approx(100 * e.results["AP"], abs=1e-6)
    assert 5.0 < res["bbox"]["AP"] < 95.0
