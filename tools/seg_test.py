"""Test (and visualise) a segmentor with mmseg/mmengine (same options as mmsegmentation's tools/test.py).

    python tools/seg_test.py CONFIG CHECKPOINT [--tta] [--show-dir DIR] [--out DIR] [--work-dir DIR]
    torchrun --nproc_per_node=N tools/seg_test.py CONFIG CHECKPOINT --launcher pytorch

``--tta`` runs the config's ``tta_pipeline`` (multi-scale + flip) through ``tta_model``;
``--show-dir`` writes colour-coded predictions next to the ground truth.
"""

from __future__ import annotations

import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.logging import print_log

import seg  # noqa: F401  (registers modules, safe loading of mmengine checkpoints)
from seg.launch import (
    add_runner_arguments,
    is_tta_config,
    load_config,
    parse_runner_args,
    run,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Test (and eval) a segmentor")
    parser.add_argument("config", help="test config file path")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--work-dir", help="the directory to save the file containing evaluation metrics")
    parser.add_argument(
        "--out", type=str, help="the directory to save output prediction for offline evaluation"
    )
    parser.add_argument("--show", action="store_true", help="show prediction results")
    parser.add_argument("--show-dir", help="directory where painted images will be saved")
    parser.add_argument("--wait-time", type=float, default=2, help="the interval of show (s)")
    parser.add_argument("--tta", action="store_true", help="test time augmentation")
    add_runner_arguments(parser)
    return parse_runner_args(parser, argv)


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hooks = cfg.default_hooks
    if "visualization" not in hooks:
        raise RuntimeError(
            "--show/--show-dir need default_hooks.visualization (SegVisualizationHook) in the config"
        )
    vis = hooks["visualization"]
    vis["draw"] = True
    if args.show:
        vis["show"] = True
        vis["wait_time"] = args.wait_time
    if args.show_dir:
        cfg.visualizer["save_dir"] = args.show_dir


def build_config(args: argparse.Namespace) -> Config:
    for path, what in ((args.config, "config"), (args.checkpoint, "checkpoint")):
        if not osp.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta and is_tta_config(cfg):
        print_log(f"{args.config} already tests with multi-scale + flip: --tta changes nothing", "current")
    elif args.tta:
        if "tta_pipeline" not in cfg or "tta_model" not in cfg:
            raise KeyError(f"{args.config}: --tta needs `tta_pipeline` and `tta_model` in the config")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    if args.out is not None:
        cfg.test_evaluator["output_dir"] = args.out
        cfg.test_evaluator["keep_results"] = True
    return cfg


def main(argv: list[str] | None = None) -> None:
    run(build_config(parse_args(argv)), "test")


if __name__ == "__main__":
    main()
