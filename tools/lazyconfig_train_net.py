#!/usr/bin/env python
"""Train or evaluate a detector from a lazy (Python) config.

Same command line as detectron2's ``tools/lazyconfig_train_net.py``::

    python tools/lazyconfig_train_net.py --config-file configs/det/<config>.py \
        [--num-gpus N --num-machines M --machine-rank R --dist-url URL] [--resume] [--eval-only] key=value ...

Without a GPU it runs on CPU (``--num-gpus`` then counts CPU processes, joined with gloo).
"""

from __future__ import annotations

from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser, default_setup, launch

import det  # noqa: F401  (registers datasets, applies compatibility shims)
from det.engine import apply_overrides, do_eval_only, do_train, refuse_bad_overrides


def main(args) -> dict:
    cfg = LazyConfig.load(args.config_file)
    cfg = apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        return do_eval_only(cfg)
    return do_train(cfg, resume=args.resume)


def invoke_main(argv: list[str] | None = None) -> None:
    args = default_argument_parser().parse_args(argv)
    refuse_bad_overrides(args.config_file, args.opts)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
