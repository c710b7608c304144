#!/usr/bin/env python
"""Run a trained detector (lazy config) on images and write pictures with boxes and masks drawn.

    python tools/demo.py --config-file configs/det/<config>.py --input img1.jpg "dir/*.png" \
        --output out/ [--weights model.pth] [--confidence-threshold 0.5] [key=value ...]

Uses the config's test-time resize and the class names of ``dataloader.test``'s dataset.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import ColorMode, Visualizer

import det  # noqa: F401  (registers datasets, applies compatibility shims)
from det.engine import apply_overrides, build_model, load_weights, refuse_bad_overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", required=True, help="image files or glob patterns")
    p.add_argument("--output", required=True, help="folder for the drawn pictures")
    p.add_argument("--weights", default=None, help="checkpoint (default: train.init_checkpoint)")
    p.add_argument("--confidence-threshold", type=float, default=0.5)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    return p.parse_args(argv)


def _expand(patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        for m in matches:
            if not Path(m).is_file():
                raise FileNotFoundError(f"--input {m!r}: no such image file")
            files.append(Path(m))
    return files


def _metadata(cfg):
    names = cfg.dataloader.test.dataset.names
    name = names if isinstance(names, str) else names[0]
    meta = MetadataCatalog.get(name)
    if not meta.get("thing_classes"):
        try:
            DatasetCatalog.get(name)  # COCO-format sets read their class names from the JSON
        except (FileNotFoundError, OSError):
            pass
    return meta


class Predictor:
    """One image in (HWC, model's format), instances in original pixel coordinates out."""

    def __init__(self, cfg, weights: str) -> None:
        self.model, _ = build_model(cfg)
        load_weights(self.model, weights)
        self.model.eval()
        self.augs = T.AugmentationList([instantiate(a) for a in cfg.dataloader.test.mapper.augmentations])
        self.input_format = self.model.input_format

    @torch.no_grad()
    def __call__(self, image):
        h, w = image.shape[:2]
        aug_input = T.AugInput(image)
        self.augs(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        return self.model([{"image": tensor, "height": h, "width": w}])[0]["instances"].to("cpu")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logger(name="detectron2")
    refuse_bad_overrides(args.config_file, args.opts)
    cfg = apply_overrides(LazyConfig.load(args.config_file), args.opts)
    weights = args.weights or cfg.train.init_checkpoint
    if not weights:
        raise SystemExit("no weights: pass --weights or train.init_checkpoint=...")
    try:
        files = _expand(args.input)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    predictor = Predictor(cfg, weights)
    meta = _metadata(cfg)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        image = read_image(str(path), format=predictor.input_format)
        instances = predictor(image)
        instances = instances[instances.scores >= args.confidence_threshold]
        rgb = image if predictor.input_format == "RGB" else image[:, :, ::-1]
        drawn = Visualizer(rgb, meta, instance_mode=ColorMode.IMAGE).draw_instance_predictions(instances)
        target = out / f"{path.stem}.jpg"
        drawn.save(str(target))
        print(f"{path}: {len(instances)} detections -> {target}")


if __name__ == "__main__":
    main()
