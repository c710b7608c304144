"""Convert EVA-02 checkpoints between every layout this toolkit meets.

    python tools/convert_checkpoint.py --input IN --output OUT --to {det,seg,timm,eva02} \
        [--model eva02_base] [--patch-size 16] [--pos-grid 14] [--num-classes 80 | --drop-class-heads]

Outputs: ``det`` a detectron2 ``train.init_checkpoint`` ({"model": {"backbone.net.<name>": ...}}, plus
the neck and heads when the input is a detector), ``seg`` an mmseg ``pretrained`` checkpoint
({"state_dict": {"backbone.<name>": ...}}), ``timm`` a timm ``Eva`` state dict, ``eva02`` the
original release layout ({"model": ...}, with ``mask_token``/``norm``/``lm_head`` when present).
The inputs it recognises and the geometry rules: :mod:`backbone.conversion`.
"""

from __future__ import annotations

import argparse
import os
import sys

from backbone.conversion import TARGETS, convert_file
from backbone.io import CheckpointError
from backbone.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="checkpoint to convert")
    parser.add_argument("--output", required=True, help="file to write (atomically)")
    parser.add_argument("--to", required=True, choices=tuple(TARGETS))
    parser.add_argument(
        "--model", choices=sorted(PRESETS), help="expected size; an input of another size fails"
    )
    parser.add_argument("--patch-size", type=int, help="patch size of the output (default: 16 for det/seg)")
    parser.add_argument("--pos-grid", type=int, help="side of the stored position-embedding grid")
    parser.add_argument("--patch-resize", choices=("bicubic", "pinv"), default="bicubic")
    heads = parser.add_mutually_exclusive_group()
    heads.add_argument(
        "--num-classes", type=int, help="det: re-initialise class-specific predictors for K classes"
    )
    heads.add_argument("--drop-class-heads", action="store_true", help="det: drop class-specific predictors")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="unpickle non-tensor objects (trusted files)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.path.exists(args.output) and not args.force:
        print(f"error: {args.output} exists (pass --force to overwrite)", file=sys.stderr)
        return 2
    options = dict(model=args.model, patch_size=args.patch_size, pos_grid=args.pos_grid,
                   patch_resize=args.patch_resize)  # fmt: skip
    if args.to == "det":
        options.update(num_classes=args.num_classes, drop_class_heads=args.drop_class_heads)
    try:
        report = convert_file(args.input, args.output, args.to, args.trust_pickle, **options)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.text())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
