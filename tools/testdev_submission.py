#!/usr/bin/env python
"""Run a detector on a test set and write the evaluation server's result files.

    python tools/testdev_submission.py --config-file CFG --output DIR [--name ALG] [--testset test-dev2017] \
        [--num-gpus N --num-machines M --machine-rank R --dist-url URL] \
        train.init_checkpoint=model.pth [key=value ...]

The submission goes through the same path as ``tools/lazyconfig_train_net.py --eval-only``
(``default_setup``, the row's EMA weights with ``train.model_ema.use_ema_weights_for_eval_only``,
test-time augmentation with ``test.aug.enabled``); only ``dataloader.evaluator`` is replaced by
the test-dev writer. Runs on the config's ``dataloader.test`` dataset (override it, e.g.
``dataloader.test.dataset.names=coco_2017_test-dev`` or ``toy_coco_test-dev``) and writes
``DIR/{bbox,segm}/detections_<testset>_<name>_results.json`` plus a zip of each, after checking
every image was processed, category ids are the dataset's own, boxes are xywh, masks RLE,
scores sorted and finite. An LVIS row keeps its evaluator's cap (300, or 1000 for O365 -> LVIS)
detections per image.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import LazyConfig  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402

import det  # noqa: E402,F401  (registers datasets, applies compatibility shims)
from det.engine import do_eval_only  # noqa: E402
from det.testdev import TASKS, SubmissionError, TestDevWriter, result_file_name  # noqa: E402


def argument_parser():
    p = default_argument_parser(epilog=__doc__)
    p.add_argument("--output", required=True, help="folder for the result files")
    p.add_argument("--name", default="eva02", help="algorithm name in the file name (no '_')")
    p.add_argument("--testset", default="test-dev2017", help="test set part of the file name")
    p.add_argument("--tasks", default="bbox,segm", help=f"comma-separated subset of {','.join(TASKS)}")
    return p


def use_testdev_writer(cfg, output: str, name: str, testset: str, tasks: list[str]) -> None:
    """Replace ``dataloader.evaluator`` by the test-dev writer, keeping an LVIS evaluator's cap."""
    # Bad arguments fail here, before the model is built.
    result_file_name(testset, name)
    if not tasks or set(tasks) - set(TASKS):
        raise SubmissionError(f"--tasks must be a non-empty subset of {','.join(TASKS)}, got {tasks}")
    names = cfg.dataloader.test.dataset.names
    if not isinstance(names, str):
        if len(names) != 1:
            raise SubmissionError(f"dataloader.test.dataset.names must name one test set, got {list(names)}")
        names = names[0]
    evaluator = cfg.dataloader.get("evaluator") or {}
    cap = evaluator.get("max_dets_per_image", None)  # LVIS rows; COCO's maxDets are server-side
    cfg.dataloader.evaluator = L(TestDevWriter)(
        dataset_name=names,
        out_dir=str(output),
        name=name,
        testset=testset,
        tasks=list(tasks),
        max_dets_per_image=cap,
    )


def main(args) -> dict:
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    use_testdev_writer(cfg, args.output, args.name, args.testset, args.tasks.split(","))
    args.eval_only = True
    default_setup(cfg, args)
    result = do_eval_only(cfg)
    if comm.is_main_process():
        for task in args.tasks.split(","):
            info = result.get(f"submission/{task}", {})
            path = Path(args.output) / task / result_file_name(args.testset, args.name)
            print(f"{task}: {info.get('detections')} detections on {info.get('images')} images -> {path}")
    return result


def invoke_main(argv: list[str] | None = None) -> None:
    args = argument_parser().parse_args(argv)
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
