"""Train a segmentor with mmseg/mmengine (same options as mmsegmentation's tools/train.py).

    python tools/seg_train.py CONFIG [--work-dir DIR] [--resume] [--amp] [--cfg-options k=v ...]
    torchrun --nproc_per_node=N tools/seg_train.py CONFIG --launcher pytorch

Configs pull in the ``seg`` package with ``custom_imports`` (installed by ``pip install -e .``).
Without CUDA, ``--launcher pytorch`` runs on gloo and AMP configs fall back to fp32.
"""

from __future__ import annotations

import argparse
import logging
import os.path as osp

from mmengine.config import Config
from mmengine.logging import print_log

import seg  # noqa: F401  (registers modules, safe loading of mmengine checkpoints)
from seg.launch import (
    add_runner_arguments,
    cpu_fallback_optim,
    is_tta_config,
    load_config,
    parse_runner_args,
    run,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a segmentor")
    parser.add_argument("config", help="train config file path")
    parser.add_argument("--work-dir", help="the dir to save logs and models")
    parser.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="resume from the latest checkpoint in the work_dir",
    )
    parser.add_argument(
        "--amp", action="store_true", default=False, help="enable automatic-mixed-precision training"
    )
    add_runner_arguments(parser)
    return parse_runner_args(parser, argv)


def build_config(args: argparse.Namespace) -> Config:
    if not osp.isfile(args.config):
        raise FileNotFoundError(f"config file not found: {args.config}")

    def refuse_evaluation_config(cfg: Config) -> None:
        if is_tta_config(cfg):
            raise ValueError(
                f"{args.config} is an evaluation config (its model is the SegTTAModel wrapper); "
                "train with the config it is based on"
            )

    cfg = load_config(args, check=refuse_evaluation_config)
    if args.amp:
        optim_type = cfg.optim_wrapper.type
        if optim_type == "AmpOptimWrapper":
            print_log(
                "AMP training is already enabled in your config.", logger="current", level=logging.WARNING
            )
        else:
            if optim_type != "OptimWrapper":
                raise ValueError(f"--amp only works with OptimWrapper, but the config has {optim_type}")
            cfg.optim_wrapper.type = "AmpOptimWrapper"
            cfg.optim_wrapper.loss_scale = "dynamic"
    cfg.resume = args.resume
    cpu_fallback_optim(cfg)
    return cfg


def main(argv: list[str] | None = None) -> None:
    run(build_config(parse_args(argv)), "train")


if __name__ == "__main__":
    main()
