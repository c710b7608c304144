"""Dataset registration beyond detectron2's builtin COCO/LVIS ones.

All paths are relative to ``$DETECTRON2_DATASETS`` (default ``datasets/``), read when the
dataset is first loaded, so registering never touches the disk.

* ``toy_coco_{train,val,test-dev}``: the synthetic set of ``tools/make_toy_data.py``.
* ``objects365_v2_{train,val}`` (alias ``objects365_{train,val}``): Objects365 v2 with
  ``o365/annotations/zhiyuan_objv2_{train,val}.json``; image ``file_name``s (``images/v1/patch0/...``)
  are relative to ``o365/``.
* :func:`register_coco_path`: any COCO-format set by path.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

TOY_SPLITS = {
    "toy_coco_train": ("annotations/instances_train.json", "train"),
    "toy_coco_val": ("annotations/instances_val.json", "val"),
    "toy_coco_test-dev": ("annotations/image_info_test-dev.json", "test"),
}

O365_SPLITS = {
    "objects365_v2_train": ("annotations/zhiyuan_objv2_train.json", "."),
    "objects365_v2_val": ("annotations/zhiyuan_objv2_val.json", "."),
}


def load_checked_coco_json(json_file: str, image_root: str, name: str) -> list[dict]:
    """detectron2's ``load_coco_json`` with one clear error naming the file for an annotation file that
    is missing or not JSON, and for a box with a negative or non-finite size (both would otherwise
    surface deep inside training, or not at all)."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{json_file}: annotation file of dataset '{name}' not found")
    try:
        dicts = load_coco_json(json_file, image_root, name)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{json_file}: not a JSON annotation file (dataset '{name}'): {err}") from None
    for record in dicts:
        for ann in record.get("annotations", ()):
            box = ann.get("bbox", ())
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
                raise ValueError(
                    f"{json_file}: image {record.get('image_id')} ({record.get('file_name')}) has an "
                    f"annotation with box {list(box)}; boxes are [x, y, width, height] with finite "
                    "values and width, height >= 0"
                )
    return dicts


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str) -> None:
    """detectron2's ``register_coco_instances``, loading through :func:`load_checked_coco_json`."""
    DatasetCatalog.register(name, lambda: load_checked_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata
    )


def datasets_root() -> Path:
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).resolve()


def register_coco_path(
    name: str, json_file: str | os.PathLike, image_root: str | os.PathLike, metadata: dict | None = None
) -> None:
    """Register a COCO-format instance set; categories come from the JSON on first load."""
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset {name!r} is already registered")
    register_coco_instances(name, metadata or {}, str(json_file), str(image_root))


def _register_under(
    root: Path, splits: dict[str, tuple[str, str]], aliases: dict[str, str], overwrite: bool
) -> None:
    registered = set(DatasetCatalog.list())
    for name, (json_rel, image_rel) in splits.items():
        for alias in (name, *[a for a, target in aliases.items() if target == name]):
            if alias in registered:
                if not overwrite:
                    continue
                DatasetCatalog.remove(alias)
                MetadataCatalog.remove(alias)
            register_coco_instances(alias, {}, str(root / json_rel), str(root / image_rel))


def register_all(root: str | os.PathLike | None = None, overwrite: bool = False) -> None:
    """Register the toy and Objects365 sets under ``root`` (default ``$DETECTRON2_DATASETS``).

    Idempotent; ``overwrite=True`` re-points already registered names at ``root``.
    """
    base = Path(root).resolve() if root is not None else datasets_root()
    _register_under(base / "toy_coco", TOY_SPLITS, {}, overwrite)
    _register_under(
        base / "o365",
        O365_SPLITS,
        {"objects365_train": "objects365_v2_train", "objects365_val": "objects365_v2_val"},
        overwrite,
    )
