"""Write a small synthetic instance-segmentation set (shapes on textured backgrounds).

One generator feeds two layouts:

* ``OUT/toy_coco/``: COCO instances (polygon masks) ``annotations/instances_{train,val}.json``,
  a test-dev style ``annotations/image_info_test-dev.json`` and ``{train,val,test}/*.jpg``.
  The instance files also carry the LVIS fields (category ``frequency``, image
  ``neg_category_ids`` / ``not_exhaustive_category_ids``), so the ``lvis`` API and
  evaluator read them too.
* ``OUT/toy_ade/``: ADE20K layout ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` (0 = ignore: the anti-aliased rim of every
  shape, 1 = background, 2.. = shape classes in category order), same pictures as train/val.

Every class is drawn in its own colour family (``--random-colours``: any colour, outline only).
Deterministic for a given ``--seed``; about ten seconds with the defaults.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

from backbone.io import atomic_write_text

# Non-contiguous ids on purpose: consumers must map through the JSON, not assume 1..K.
CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "square", "supercategory": "shape"},
    {"id": 5, "name": "triangle", "supercategory": "shape"},
    {"id": 7, "name": "star", "supercategory": "shape"},
    {"id": 9, "name": "cross", "supercategory": "shape"},
]


# Each class is drawn in its own colour family (BGR, jittered by +-25 per channel; the RGB of the
# segmentation palette): CPU-sized models trained from scratch then learn the classes in minutes,
# where outline alone takes thousands of iterations. ``--random-colours`` draws any colour.
CLASS_COLOURS = {
    "circle": (60, 20, 220),
    "square": (255, 128, 0),
    "triangle": (0, 200, 255),
    "star": (75, 180, 60),
    "cross": (240, 32, 160),
}
COLOUR_JITTER = 25.0


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Closed outline (N, 2) of a shape of circumradius ``r``."""
    if kind == "circle":
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif kind == "square":
        t = np.arange(4) * math.pi / 2 + math.pi / 4
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif kind == "triangle":
        t = np.arange(3) * 2 * math.pi / 3 - math.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif kind == "star":
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)
    elif kind == "cross":
        a, b = r * 0.8, r * 0.28
        pts = np.array(
            [
                [-b, -a],
                [b, -a],
                [b, -b],
                [a, -b],
                [a, b],
                [b, b],
                [b, a],
                [-b, a],
                [-b, b],
                [-a, b],
                [-a, -b],
                [-b, -b],
            ],
            dtype=np.float64,
        )
    else:
        raise ValueError(f"unknown shape {kind!r}")
    if kind != "circle":
        c, s = math.cos(angle), math.sin(angle)
        pts = pts @ np.array([[c, s], [-s, c]])
    return pts + np.array([cx, cy])


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour gradient + stripes + noise, so the model has to tell shapes from texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    grad = rng.uniform(-0.3, 0.3, size=(2, 3))
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    freq, phase, theta = rng.uniform(0.05, 0.25), rng.uniform(0, 6.28), rng.uniform(0, math.pi)
    stripes = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
    img += stripes[..., None] * rng.uniform(5, 25, size=3)
    img += rng.normal(0, 8, size=(h, w, 3))
    return img


def _make_image(
    rng: np.random.Generator,
    size: int,
    max_objects: int,
    height: int | None = None,
    categories: list[dict] = CATEGORIES,
    class_colours: bool = True,
):
    """One ``size`` wide, ``height`` (default ``size``) tall picture with non-overlapping shapes;
    returns (BGR uint8, [(cat_index, polygon)], label map)."""
    h, w = height or size, size
    img = _background(rng, h, w)
    label = np.ones((h, w), np.uint8)  # 1 = background
    objects: list[tuple[int, np.ndarray]] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):
            r = float(rng.uniform(0.07, 0.2) * min(h, w))
            cx, cy = rng.uniform([r + 2, r + 2], [w - r - 2, h - r - 2])
            if all(math.hypot(cx - px, cy - py) > r + pr + 3 for px, py, pr in placed):
                break
        else:
            continue
        k = int(rng.integers(len(categories)))
        poly = _shape_polygon(categories[k]["name"], cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        # the same three draws either way: layouts do not depend on the colour rule
        color = rng.uniform(0, 255, size=3)
        if class_colours:
            base = np.asarray(CLASS_COLOURS[categories[k]["name"]], np.float64)
            color = np.clip(base + (color / 255.0 * 2 - 1) * COLOUR_JITTER, 0, 255)
        pts = np.round(poly * 16).astype(np.int32)  # 4 fractional bits for sub-pixel outlines
        canvas = np.zeros((h, w), np.uint8)
        cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=4)
        alpha = canvas.astype(np.float32)[..., None] / 255.0
        img = img * (1 - alpha) + color * alpha
        label[canvas >= 128] = k + 2
        label[(canvas > 0) & (canvas < 255)] = 0  # anti-aliased rim: ambiguous, ignored
        placed.append((cx, cy, r))
        objects.append((k, poly))
    return np.clip(img, 0, 255).astype(np.uint8), objects, label


def _annotation(
    ann_id: int,
    image_id: int,
    cat_index: int,
    poly: np.ndarray,
    w: int,
    h: int,
    categories: list[dict] = CATEGORIES,
) -> dict:
    poly = np.clip(poly, 0, [w, h])
    x0, y0 = poly.min(0)
    x1, y1 = poly.max(0)
    # Shoelace area of the exact polygon (what pycocotools would rasterise, up to pixel rounding).
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": categories[cat_index]["id"],
        "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
        "area": round(area, 2),
        "bbox": [
            round(float(x0), 2),
            round(float(y0), 2),
            round(float(x1 - x0), 2),
            round(float(y1 - y0), 2),
        ],
        "iscrowd": 0,
    }


def _frequencies(annotations: list[dict], categories: list[dict] = CATEGORIES) -> dict[int, str]:
    """LVIS frequency group per category from its training image count (r: <=10, c: <=100, f: more)."""
    counts = {
        c["id"]: len({a["image_id"] for a in annotations if a["category_id"] == c["id"]}) for c in categories
    }
    return {cid: "r" if n <= 10 else "c" if n <= 100 else "f" for cid, n in counts.items()}


def generate(
    out: Path,
    num_train: int,
    num_val: int,
    num_test: int,
    size: int,
    max_objects: int,
    seed: int,
    height: int | None = None,
    categories: list[dict] = CATEGORIES,
    class_colours: bool = True,
) -> None:
    """Write the set; images are ``size`` wide and ``height`` (default ``size``: square) tall.

    ``class_colours``: every class in its own colour family (see ``CLASS_COLOURS``); False draws
    shapes in random colours, so only the outline tells the classes apart."""
    h = height or size
    coco, ade = out / "toy_coco", out / "toy_ade"
    info = {"description": "synthetic shapes (toy_coco)", "version": "1.0", "year": 2026}
    splits = [("train", "training", num_train), ("val", "validation", num_val), ("test", None, num_test)]
    ann_id = 1
    for split_index, (split, ade_split, count) in enumerate(splits):
        rng = np.random.default_rng([seed, split_index])
        (coco / split).mkdir(parents=True, exist_ok=True)
        if ade_split:
            (ade / "images" / ade_split).mkdir(parents=True, exist_ok=True)
            (ade / "annotations" / ade_split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image_id = (split_index + 1) * 100000 + i
            name = f"{split}_{i:06d}.jpg"
            img, objects, label = _make_image(rng, size, max_objects, h, categories, class_colours)
            cv2.imwrite(str(coco / split / name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            image = {"id": image_id, "file_name": name, "height": h, "width": size}
            if split != "test":
                # Every shape is labelled, so absent categories are verified negatives (LVIS semantics).
                present = {k for k, _ in objects}
                image["neg_category_ids"] = [c["id"] for j, c in enumerate(categories) if j not in present]
                image["not_exhaustive_category_ids"] = []
            images.append(image)
            for k, poly in objects:
                annotations.append(_annotation(ann_id, image_id, k, poly, size, h, categories))
                ann_id += 1
            if ade_split:
                stem = f"ADE_{ade_split}_{i:08d}"
                cv2.imwrite(
                    str(ade / "images" / ade_split / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95]
                )
                cv2.imwrite(str(ade / "annotations" / ade_split / f"{stem}.png"), label)
        (coco / "annotations").mkdir(parents=True, exist_ok=True)
        if split == "test":
            _write_json_file(
                coco / "annotations" / "image_info_test-dev.json",
                {"info": info, "images": images, "categories": categories, "licenses": []},
            )
            continue
        if split == "train":
            frequencies = _frequencies(annotations, categories)
        with_frequency = [{**c, "frequency": frequencies[c["id"]]} for c in categories]
        _write_json_file(
            coco / "annotations" / f"instances_{split}.json",
            {
                "info": info,
                "images": images,
                "annotations": annotations,
                "categories": with_frequency,
                "licenses": [],
            },
        )
    classes = ["background"] + [c["name"] for c in categories]
    ade.mkdir(parents=True, exist_ok=True)
    (ade / "classes.txt").write_text("\n".join(["ignore", *classes]) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("DETECTRON2_DATASETS", "datasets")),
        help="parent folder; toy_coco/ and toy_ade/ are written inside (default: datasets/)",
    )
    parser.add_argument("--num-train", type=int, default=240)
    parser.add_argument("--num-val", type=int, default=40)
    parser.add_argument("--num-test", type=int, default=20)
    parser.add_argument("--size", type=int, default=192, help="image width (and height) in pixels")
    parser.add_argument("--height", type=int, default=None, help="image height if not --size (non-square)")
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shapes",
        default=",".join(c["name"] for c in CATEGORIES),
        help="comma-separated subset of the shape classes, in this order (default: all five)",
    )
    parser.add_argument(
        "--random-colours",
        action="store_true",
        help="draw shapes in random colours (only the outline tells the classes apart: much harder)",
    )
    args = parser.parse_args(argv)
    for name in ("num_train", "num_val", "num_test"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.size < 32 or (args.height is not None and args.height < 32):
        parser.error("--size and --height must be >= 32")
    names = [c["name"] for c in CATEGORIES]
    shapes = args.shapes.split(",")
    if not shapes or any(s not in names for s in shapes) or len(set(shapes)) != len(shapes):
        parser.error(f"--shapes must be distinct names among {names}, got {args.shapes!r}")
    categories = [c for c in CATEGORIES if c["name"] in shapes]
    sizes = (args.num_train, args.num_val, args.num_test, args.size, args.max_objects)
    generate(
        args.out,
        *sizes,
        args.seed,
        height=args.height,
        categories=categories,
        class_colours=not args.random_colours,
    )
    print(f"toy data written to {args.out / 'toy_coco'} and {args.out / 'toy_ade'}")


def _write_json_file(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data))
