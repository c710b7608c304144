"""EVA-02 masked-image-modeling pre-training with a frozen EVA-CLIP teacher.

Single process:   python tools/pretrain.py --recipe toy --data datasets/toy_coco/train --output-dir OUT
Multi-process:    torchrun --nproc_per_node 8 [--nnodes N --node_rank R --master_addr A] tools/pretrain.py ...
(NCCL on GPUs, gloo on CPU). Every field of ``PretrainConfig`` is a flag; a ``--recipe`` sets the
released values first, explicit flags override them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing

from pretraining.recipes import RECIPES, PretrainConfig, recipe_config
from pretraining.teacher import TEACHERS, TeacherError

_HELP = {
    "data": "image folder (ImageFolder layout or flat, searched recursively)",
    "model": "student preset: eva02_tiny|small|base|large",
    "model_overrides": "extra EVA02ViT arguments as key=value (e.g. depth=2)",
    "teacher": f"teacher tower: {', '.join(sorted(TEACHERS))}",
    "teacher_ckpt": "local checkpoint file of the teacher (EVA-CLIP .pt, timm state dict, .safetensors)",
    "batch_size": "images per process per micro-batch",
    "total_batch_size": "images per optimizer step (batch_size x processes x accumulation)",
    "resume": "checkpoint to continue from, or 'auto' for OUTPUT_DIR/checkpoint-last.pth when present",
    "amp": "autocast dtype: none, bf16 (GPU or CPU) or fp16 (GPU, with loss scaling)",
    "act_checkpoint": "recompute block activations in the backward pass (less memory)",
    "compile": "torch.compile each student block (regional: new sizes reuse the compiled code)",
    "max_steps": "train this many optimizer steps (the schedule is compressed to them)",
    "stop_after": "leave after this step with a checkpoint; continue later with --resume auto",
}


def _parse_value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="released recipe (or 'toy') to start from")
    parser.add_argument("--list-recipes", action="store_true", help="print the recipes and exit")
    hints = typing.get_type_hints(PretrainConfig)
    for field in dataclasses.fields(PretrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = hints[field.name]
        args = typing.get_args(kind)
        helptext = _HELP.get(field.name, "")
        if field.name == "model_overrides":
            parser.add_argument(flag, nargs="*", default=None, metavar="KEY=VALUE", help=helptext)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(flag, nargs=len(args), type=args[0], default=None, help=helptext)
        else:
            base = next((a for a in args if a is not type(None)), kind)
            parser.add_argument(flag, type=base, default=None, help=helptext)
    return parser


def config_from_args(ns: argparse.Namespace) -> PretrainConfig:
    overrides = {}
    for field in dataclasses.fields(PretrainConfig):
        value = getattr(ns, field.name)
        if value is None:
            continue
        if field.name == "model_overrides":
            pairs = [item.split("=", 1) for item in value]
            bad = [item for item, pair in zip(value, pairs) if len(pair) != 2]
            if bad:
                raise SystemExit(f"--model-overrides expects KEY=VALUE items, got {bad}")
            value = {k: _parse_value(v) for k, v in pairs}
        elif isinstance(value, list):
            value = tuple(value)
        overrides[field.name] = value
    return recipe_config(ns.recipe, **overrides)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.list_recipes:
        for name, recipe in RECIPES.items():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()))
        return 0
    try:
        cfg = config_from_args(ns)
    except ValueError as err:  # an option out of range, before anything is read or written
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not cfg.data:
        raise SystemExit("--data is required (a folder of images)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tqdm import tqdm

    from pretraining.engine import train

    rank = int(os.environ.get("RANK", "0"))
    log = (lambda msg: tqdm.write(msg, file=sys.stdout)) if rank == 0 else (lambda msg: None)
    try:
        summary = train(cfg, log=log)
    except (TeacherError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        from pretraining.distributed import shutdown

        shutdown()
    if rank == 0 and summary["history"]:
        with open(os.path.join(cfg.output_dir, "summary.json"), "w") as handle:
            json.dump(summary, handle, indent=1)
        first, last = summary["history"][0][1], summary["history"][-1][1]
        print(
            f"done: step {summary['step']}, loss {first:.4f} -> {last:.4f}, "
            f"{summary['seconds_per_image'] * 1e3:.1f} ms/image, checkpoint {summary['checkpoint']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
