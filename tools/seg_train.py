"""Train a segmentor with mmseg/mmengine (same options as mmsegmentation's tools/train.py).

    python tools/seg_train.py CONFIG [--work-dir DIR] [--resume] [--amp] [--cfg-options k=v ...]
    torchrun --nproc_per_node=N tools/seg_train.py CONFIG --launcher pytorch

Configs pull in the ``seg`` package with ``custom_imports`` (installed by ``pip install -e .``).
Without CUDA, ``--launcher pytorch`` runs on gloo and AMP configs fall back to fp32.
"""

from __future__ import annotations

import argparse
import logging
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

import seg  # noqa: F401  (registers modules, safe loading of mmengine checkpoints)
from seg.launch import (
    cpu_fallback_optim,
    init_cpu_distributed,
    is_tta_config,
    prepare_determinism,
    relax_determinism,
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
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings of the config, key=value (xxx=yyy format)",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def build_config(args: argparse.Namespace) -> Config:
    if not osp.isfile(args.config):
        raise FileNotFoundError(f"config file not found: {args.config}")
    cfg = Config.fromfile(args.config)
    if is_tta_config(cfg):
        raise ValueError(
            f"{args.config} is an evaluation config (its model is the SegTTAModel wrapper); "
            "train with the config it is based on"
        )
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
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
    init_cpu_distributed(cfg, args.launcher)
    prepare_determinism(cfg)
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = build_config(parse_args(argv))
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    relax_determinism()
    runner.train()


if __name__ == "__main__":
    main()
