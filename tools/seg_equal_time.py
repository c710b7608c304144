"""Equal wall-clock training budgets for two segmentation configs, measured on a shared machine.

Timing two trainings one after the other on a shared machine mostly compares the machine's load.
This tool builds both models in one process and alternates their training iterations (A, B, A, B,
...: each iteration loads its config's next batch and runs ``train_step``, as the runner does), so
both see the same load; the median costs turn an iteration budget for A into B's iteration count.

    python tools/seg_equal_time.py CONFIG_A CONFIG_B --iters-a 1000 [--rounds 8] [--cfg-options k=v ...]

``--cfg-options`` apply to both configs (e.g. the data root). Prints one JSON line:
``{"a": {"config", "s_per_iter"}, "b": {...}, "iters_a", "iters_b"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os.path as osp
import statistics
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings
from mmseg.registry import MODELS

import seg  # noqa: F401  (registers the EVA02 backbone and the Mask2Former pieces)
from backbone.overrides import checked_options
from seg.launch import cpu_fallback_optim, registered_type


class Trainee:
    """One config's model, optimizer and training batches."""

    def __init__(self, path: str, options: dict | None) -> None:
        if not osp.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        cfg = Config.fromfile(path)
        if options:
            cfg.merge_from_dict(checked_options(cfg, options, registered_type))
        cpu_fallback_optim(cfg)
        if cfg.get("custom_imports"):
            import_modules_from_strings(**cfg.custom_imports)
        init_default_scope(cfg.get("default_scope", "mmseg"))
        self.path = path
        self.model = revert_sync_batchnorm(MODELS.build(cfg.model))
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter
        try:
            self.model.init_weights()
        finally:
            logger.setLevel(level)
        self.model.train()
        self.optim = build_optim_wrapper(self.model, cfg.optim_wrapper)
        self.batches = iter(Runner.build_dataloader(cfg.train_dataloader, seed=0))
        self.costs: list[float] = []

    def step(self, timed: bool) -> None:
        start = time.perf_counter()
        self.model.train_step(next(self.batches), self.optim)
        if timed:
            self.costs.append(time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config_a")
    parser.add_argument("config_b")
    parser.add_argument("--iters-a", type=int, required=True, help="iteration budget of CONFIG_A")
    parser.add_argument("--rounds", type=int, default=8, help="timed iterations per config")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per config first")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="overrides for both configs")
    args = parser.parse_args(argv)
    if args.iters_a < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--iters-a and --rounds must be >= 1, --warmup >= 0")
    torch.manual_seed(0)
    a, b = Trainee(args.config_a, args.cfg_options), Trainee(args.config_b, args.cfg_options)
    for i in range(args.warmup + args.rounds):
        for trainee in (a, b) if i % 2 == 0 else (b, a):  # alternate who goes first, too
            trainee.step(timed=i >= args.warmup)
    cost_a, cost_b = statistics.median(a.costs), statistics.median(b.costs)
    result = dict(
        a=dict(config=args.config_a, s_per_iter=round(cost_a, 4)),
        b=dict(config=args.config_b, s_per_iter=round(cost_b, 4)),
        iters_a=args.iters_a,
        iters_b=max(1, round(args.iters_a * cost_a / cost_b)),
    )
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
