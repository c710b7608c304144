#!/usr/bin/env python
"""Export the EVA-02 backbone, a segmenter or a detector to ONNX (or a torch.export program).

    python tools/export.py --backbone eva02_tiny img_size=1024 patch_size=16 use_cls_token=False \
        window_size=16 window_block_indexes=[0,1,3,4] --output tiny.onnx --dynamic --check
    python tools/export.py --config-file configs/seg/toy/upernet_eva02_tiny_toy.py \
        --weights work_dirs/iter_200.pth --output seg.onnx --dynamic --check
    python tools/export.py --config-file configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py \
        --weights output/toy_det/model_final.pth --output det.onnx --dynamic --check

Detectors export whole (image to boxes, scores, classes, mask probabilities) by default;
``--detector-part pyramid`` exports the feature pyramid only (heads then run in PyTorch).

Trailing ``name=value`` words override ``build_backbone`` arguments (``--backbone``) or config
keys (``--config-file``). The graphs' inputs and outputs are described in docs/deployment.md.
"""

from __future__ import annotations

import argparse
import logging

from deploy import DetectorGraph
from deploy.build import build_graph, default_size, example_input, sample_inputs
from deploy.check import check_detector, check_onnx, seconds_per_image
from deploy.onnx_export import FORMATS, MIN_OPSET, ExportError, check_output_path, export_graph, op_types


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config-file", help="lazy config (configs/det) or mmseg config (configs/seg)")
    src.add_argument("--backbone", metavar="PRESET", help="bare backbone preset, e.g. eva02_tiny")
    p.add_argument("--weights", default=None, help="checkpoint (default: the model's initial weights)")
    p.add_argument("--output", required=True, help="file to write (.onnx, or .pt2 for torch-export)")
    p.add_argument("--format", default="onnx", help=f"one of {', '.join(FORMATS)} (default onnx)")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (default {MIN_OPSET})")
    p.add_argument("--dynamic", action="store_true", help="symbolic height and width (and batch if any)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="tracing size (default: model's)")
    p.add_argument(
        "--detector-part",
        default="full",
        help="detectors: full (image to boxes, scores, classes, masks; default) or pyramid (image to p2..p6)",
    )
    p.add_argument("--check", action="store_true", help="compare onnxruntime with eager at other sizes")
    p.add_argument(
        "--benchmark", type=int, default=0, metavar="N", help="time eager vs onnxruntime (best of N)"
    )
    p.add_argument("opts", nargs="*", default=[], help="name=value overrides")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("deploy").setLevel(logging.INFO)
    try:
        if args.format not in FORMATS:
            raise ExportError(f"--format {args.format!r}: unknown, expected one of {', '.join(FORMATS)}")
        if args.check and args.format != "onnx":
            raise ExportError("--check runs onnxruntime: it needs --format onnx")
        check_output_path(args.output)
        kind, graph = build_graph(
            args.config_file, args.backbone, args.opts, args.weights, args.detector_part
        )
        if not args.weights:
            print("no --weights: exporting the model's initial (untrained) weights")
        size = tuple(args.size) if args.size else tuple(default_size(kind, graph))
        path = export_graph(
            graph, example_input(kind, size, batch=2), args.output, args.format, args.dynamic, args.opset
        )
    except ExportError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {path} ({kind}, traced at {size[0]}x{size[1]}, dynamic size: {args.dynamic})")
    if args.format == "onnx":
        print("op types: " + ", ".join(op_types(path)))
    if args.check:
        samples = sample_inputs(kind, graph, size) if args.dynamic else [example_input(kind, size)]
        argmax_dim = 1 if kind == "seg" else None
        if not isinstance(graph, DetectorGraph):  # the whole detector is compared by detections below
            for result in check_onnx(path, graph, samples, argmax_dim=argmax_dim):
                print(result)
        if kind == "det":
            for result in check_detector(path, graph, samples):
                print(result)
    if args.benchmark and args.format == "onnx":
        times = seconds_per_image(path, graph, example_input(kind, size), args.benchmark)
        print(f"{kind} at {size[0]}x{size[1]}: " + ", ".join(f"{k} {v:.4f} s/img" for k, v in times.items()))


if __name__ == "__main__":
    main()
