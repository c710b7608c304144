#!/usr/bin/env python
"""Run a detector on a test set and write the evaluation server's result files.

    python tools/testdev_submission.py --config-file CFG --output DIR [--name ALG] [--testset test-dev2017] \
        train.init_checkpoint=model.pth [key=value ...]

Runs on the config's ``dataloader.test`` dataset (override it, e.g.
``dataloader.test.dataset.names=coco_2017_test-dev`` or ``toy_coco_test-dev``) and writes
``DIR/{bbox,segm}/detections_<testset>_<name>_results.json`` plus a zip of each, after checking
every image was processed, category ids are the dataset's own, boxes are xywh, masks RLE,
scores sorted and finite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import launch  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import det  # noqa: E402,F401
from det.engine import build_model, create_ddp, load_weights  # noqa: E402
from det.testdev import TestDevWriter  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--output", required=True, help="folder for the result files")
    p.add_argument("--name", default="eva02", help="algorithm name in the file name (no '_')")
    p.add_argument("--testset", default="test-dev2017", help="test set part of the file name")
    p.add_argument("--tasks", default="bbox,segm", help="comma-separated subset of bbox,segm")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    p.add_argument("--dist-url", default="auto")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    setup_logger(name="detectron2", distributed_rank=comm.get_rank())
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    model, device = build_model(cfg)
    load_weights(model, cfg.train.init_checkpoint)
    model = create_ddp(model, device)
    model.eval()
    names = cfg.dataloader.test.dataset.names
    dataset = names if isinstance(names, str) else names[0]
    writer = TestDevWriter(dataset, args.output, args.name, args.testset, tasks=args.tasks.split(","))
    result = inference_on_dataset(model, instantiate(cfg.dataloader.test), writer)
    if comm.is_main_process():
        for task, info in result.get("submission", {}).items():
            print(f"{task}: {info['detections']} detections on {info['images']} images -> {info['file']}")
    return result


if __name__ == "__main__":
    a = parse_args()
    launch(main, a.num_gpus, dist_url=a.dist_url, args=(a,))
