"""The synthetic toy set: layout, determinism, and annotations that agree with the pictures."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import toydata

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toydata.generate(out, num_train=12, num_val=4, num_test=3, size=96, max_objects=3, seed=5)
    return out


def test_layout(toy):
    coco = toy / "toy_coco"
    for rel in (
        "annotations/instances_train.json",
        "annotations/instances_val.json",
        "annotations/image_info_test-dev.json",
    ):
        assert (coco / rel).is_file(), rel
    assert len(list((coco / "train").glob("*.jpg"))) == 12
    assert len(list((coco / "val").glob("*.jpg"))) == 4
    assert len(list((coco / "test").glob("*.jpg"))) == 3
    assert len(list((toy / "toy_ade/images/training").glob("*.jpg"))) == 12
    assert len(list((toy / "toy_ade/annotations/validation").glob("*.png"))) == 4
    info = json.loads((coco / "annotations/image_info_test-dev.json").read_text())
    assert "annotations" not in info and len(info["images"]) == 3
    assert [c["id"] for c in info["categories"]] == [c["id"] for c in toydata.CATEGORIES]


def test_deterministic(toy, tmp_path):
    toydata.generate(tmp_path, num_train=12, num_val=4, num_test=3, size=96, max_objects=3, seed=5)
    for rel in (
        "toy_coco/annotations/instances_train.json",
        "toy_coco/train/train_000003.jpg",
        "toy_ade/annotations/training/ADE_training_00000003.png",
    ):
        assert (tmp_path / rel).read_bytes() == (toy / rel).read_bytes(), rel


def test_annotations_match_pixels(toy):
    """Polygon masks, boxes and areas agree (pycocotools rasterisation) and the shape is visible."""
    api = COCO(str(toy / "toy_coco/annotations/instances_train.json"))
    anns = api.loadAnns(api.getAnnIds())
    assert len(anns) >= 12
    for ann in anns:
        img = api.loadImgs(ann["image_id"])[0]
        m = api.annToMask(ann)
        assert abs(int(m.sum()) - ann["area"]) <= 0.08 * ann["area"] + 12
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(m)
        assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2
        assert abs(xs.max() + 1 - (x + w)) <= 2 and abs(ys.max() + 1 - (y + h)) <= 2
        rle = mask_utils.frPyObjects(ann["segmentation"], img["height"], img["width"])
        assert mask_utils.area(mask_utils.merge(rle)) == m.sum()


def test_ade_labels_match_coco_masks(toy):
    api = COCO(str(toy / "toy_coco/annotations/instances_train.json"))
    index = {c["id"]: i for i, c in enumerate(toydata.CATEGORIES)}
    for k, img in enumerate(api.loadImgs(sorted(api.getImgIds()))):
        label = cv2.imread(
            str(toy / f"toy_ade/annotations/training/ADE_training_{k:08d}.png"), cv2.IMREAD_UNCHANGED
        )
        assert label.shape == (img["height"], img["width"])
        assert set(np.unique(label)) <= set(range(len(index) + 2))
        for ann in api.loadAnns(api.getAnnIds(imgIds=img["id"])):
            m = api.annToMask(ann).astype(bool)
            inside = label[m]
            # Away from the ignored rim, the class map shows the instance's class.
            assert np.mean(inside == index[ann["category_id"]] + 2) > 0.7
            assert np.all((inside == index[ann["category_id"]] + 2) | (inside == 0))


def test_lvis_fields(toy):
    from det import compat

    compat.apply()
    from lvis import LVIS

    api = LVIS(str(toy / "toy_coco/annotations/instances_val.json"))
    assert {c["frequency"] for c in api.dataset["categories"]} <= {"r", "c", "f"}
    for img in api.dataset["images"]:
        present = {a["category_id"] for a in api.img_ann_map[img["id"]]}
        assert present.isdisjoint(img["neg_category_ids"])


def test_cli_rejects_bad_arguments(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools/make_toy_data.py"), "--out", str(tmp_path), "--num-train", "0"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "--num-train" in r.stderr


def test_every_class_is_drawn_in_its_colour_family(toy, tmp_path):
    coco = COCO(str(toy / "toy_coco/annotations/instances_train.json"))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    checked = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(ann["image_id"])[0]
        img = cv2.imread(str(toy / "toy_coco/train" / info["file_name"])).astype(np.float64)
        # the shape's interior, away from the anti-aliased rim and the JPEG ringing at its edge
        inside = cv2.erode(coco.annToMask(ann), np.ones((5, 5), np.uint8)).astype(bool)
        if inside.sum() < 20:
            continue
        mean = img[inside].mean(0)
        base = np.array(toydata.CLASS_COLOURS[names[ann["category_id"]]])
        assert np.abs(mean - np.clip(base, 0, 255)).max() <= toydata.COLOUR_JITTER + 6, (
            ann["id"],
            mean,
            base,
        )
        checked += 1
    assert checked >= 10
    # the colour rule draws the same random numbers: the layout (boxes, classes) does not change
    toydata.generate(
        tmp_path, num_train=12, num_val=4, num_test=3, size=96, max_objects=3, seed=5, class_colours=False
    )
    a = json.loads((toy / "toy_coco/annotations/instances_train.json").read_text())["annotations"]
    b = json.loads((tmp_path / "toy_coco/annotations/instances_train.json").read_text())["annotations"]
    assert a == b
