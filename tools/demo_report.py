#!/usr/bin/env python
"""Record what each demo step did, and draw the demo's summary (used by ``make demo``).

    python tools/demo_report.py record det --run output/demo/det --seconds 300
    python tools/demo_report.py record seg --run output/demo/seg/train --seconds 200
    python tools/demo_report.py record chain --run output/demo/pretrain/det --scratch output/demo/det \
        --seconds 400
    python tools/demo_report.py summary            # table, output/demo/summary.json, summary.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toydata.report import det_curves, draw_summary, read_picture, record_step, seg_curves, write_summary

ROOT = Path("output/demo")
ORDER = ["backbone", "det", "seg", "seg_mask2former", "chain"]


def _iterations(points: list) -> int:
    return int(points[-1][0]) if points else 0


def record(args: argparse.Namespace) -> None:
    run = Path(args.run) if args.run else None
    if args.step == "det":
        curves, metrics = det_curves(run / "metrics.json")
        what = (
            f"EVA-02 tiny Cascade Mask R-CNN, {_iterations(curves['loss'])} iterations from scratch, toy COCO"
        )
    elif args.step in ("seg", "seg_mask2former"):
        curves, metrics = seg_curves(run)
        head = "UperNet" if args.step == "seg" else "Mask2Former"
        what = f"EVA-02 tiny {head}, {_iterations(curves['loss'])} iterations from scratch, toy ADE"
    elif args.step == "chain":
        curves, metrics = det_curves(run / "metrics.json")
        scratch_curves, scratch = det_curves(Path(args.scratch) / "metrics.json")
        metrics = {"bbox_AP": metrics["bbox_AP"], "bbox_AP_scratch": scratch["bbox_AP"], **metrics}
        metrics.pop("segm_AP", None)
        curves = {"loss": curves["loss"], "bbox_AP": curves["bbox_AP"]}
        curves["loss_scratch"] = scratch_curves["loss"]
        curves["bbox_AP_scratch"] = scratch_curves["bbox_AP"]
        what = (
            f"MIM pre-training -> convert -> detector, {_iterations(curves['loss'])} iterations "
            "(scratch: the det step, same schedule)"
        )
    else:
        raise SystemExit(f"unknown demo step {args.step!r} (one of {', '.join(ORDER)})")
    path = record_step(
        args.root,
        args.step,
        seconds=args.seconds,
        metrics=metrics,
        what=what,
        outputs=args.outputs,
        curves=curves,
        finished=args.finished,
    )
    print(f"[demo] recorded {path}")


def _det_pairs(root: Path, data: Path, count: int) -> list:
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets import load_coco_json
    from detectron2.utils.visualizer import Visualizer

    dicts = load_coco_json(str(data / "annotations/instances_val.json"), str(data / "val"), "toy_coco_val")
    meta = MetadataCatalog.get("toy_coco_val")
    pairs = []
    for d in dicts[:count]:
        picture = root / "det/pictures" / Path(d["file_name"]).name
        if not picture.is_file():
            continue
        truth = Visualizer(read_picture(d["file_name"]), meta).draw_dataset_dict(d).get_image()
        pairs.append(("det", truth, read_picture(picture)))
    return pairs


def _seg_pairs(root: Path, count: int) -> list:
    # mmseg's visualizer writes ground truth | prediction side by side
    pictures = sorted((root / "seg/vis").glob("**/vis_image/*.png"))[:count]
    pairs = []
    for path in pictures:
        img = read_picture(path)
        half = img.shape[1] // 2
        pairs.append(("seg", img[:, :half], img[:, half:]))
    return pairs


def summary(args: argparse.Namespace) -> None:
    root = Path(args.root)
    result, table = write_summary(root, ORDER)
    print(table)
    pairs = _det_pairs(root, Path(args.data) / "toy_coco", 3) + _seg_pairs(root, 3)
    steps = [json.loads((root / "steps" / f"{s['name']}.json").read_text()) for s in result["steps"]]
    draw_summary(root / "summary.png", steps, pairs)
    print(f"[demo] {root / 'summary.json'} and {root / 'summary.png'} (ground truth | prediction, curves)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(ROOT), help="demo output folder (default: output/demo)")
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record one step's figures and curves")
    rec.add_argument("step", choices=["det", "seg", "seg_mask2former", "chain"])
    rec.add_argument("--run", help="the step's run folder (detectron2 output_dir / mmengine work_dir)")
    rec.add_argument("--scratch", help="chain: the from-scratch run with the same schedule")
    rec.add_argument("--seconds", type=float, required=True)
    rec.add_argument("--finished", type=float, help="when the step finished, epoch seconds (default: now)")
    rec.add_argument("--outputs", default="", help="where the step's outputs are")
    summ = sub.add_parser("summary", help="table, summary.json and summary.png")
    summ.add_argument("--data", default="datasets", help="folder holding toy_coco/")
    args = p.parse_args(argv)
    record(args) if args.command == "record" else summary(args)


if __name__ == "__main__":
    main()
