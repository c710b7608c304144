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

from detectron2.engine import launch

from det.engine import refuse_bad_overrides
from det.testdev import run_submission, submission_argument_parser


def invoke_main(argv: list[str] | None = None) -> None:
    args = submission_argument_parser(epilog=__doc__).parse_args(argv)
    refuse_bad_overrides(args.config_file, args.opts)
    launch(
        run_submission,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
