"""Result files for the COCO / LVIS evaluation servers (test-dev), validated before writing."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from backbone.io import atomic_write, atomic_write_text

from .engine import apply_overrides, do_eval_only

TASKS = ("bbox", "segm")
logger = logging.getLogger("detectron2")


class SubmissionError(ValueError):
    """A result file that the evaluation server would reject."""


def result_file_name(testset: str, name: str) -> str:
    """The server's naming scheme: ``detections_<testset>_<name>_results.json``."""
    if not name or any(c in name for c in "/_ ") or not testset:
        raise SubmissionError(f"algorithm name {name!r} must be non-empty without '/', '_' or spaces")
    return f"detections_{testset}_{name}_results.json"


def _check_number(value, what: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SubmissionError(f"{what} is {value!r}, not a finite number")


def validate_results(
    results: list[dict], image_info: dict, processed_image_ids: Iterable[int], task: str
) -> None:
    """Raise :class:`SubmissionError` naming the first problem found.

    Checks: every image of ``image_info`` was processed and no other; category ids belong to
    the dataset's own id space; boxes are finite ``[x, y, w, h]`` with ``w, h >= 0``; masks are
    RLE (``size`` + string ``counts``) of the image's size; scores are finite and sorted
    (descending) within each image.
    """
    if task not in TASKS:
        raise SubmissionError(f"task must be one of {TASKS}, got {task!r}")
    images = {img["id"]: img for img in image_info["images"]}
    categories = {c["id"] for c in image_info["categories"]}
    processed = set(processed_image_ids)
    missing = sorted(set(images) - processed)
    if missing:
        raise SubmissionError(
            f"{len(missing)} image(s) of the image-info file were not processed, e.g. {missing[:5]}"
        )
    extra = sorted(processed - set(images))
    if extra:
        raise SubmissionError(
            f"{len(extra)} processed image(s) are not in the image-info file, e.g. {extra[:5]}"
        )
    last: dict[int, float] = {}
    for i, r in enumerate(results):
        where = f"result #{i} (image {r.get('image_id')!r})"
        if r.get("image_id") not in images:
            raise SubmissionError(f"{where}: image_id not in the image-info file")
        if r.get("category_id") not in categories:
            raise SubmissionError(
                f"{where}: category_id {r.get('category_id')!r} is not a category of this dataset "
                f"(valid ids: {sorted(categories)[:10]}...)"
            )
        _check_number(r.get("score"), f"{where}: score")
        if r["score"] > last.get(r["image_id"], math.inf):
            raise SubmissionError(f"{where}: scores are not sorted in descending order within the image")
        last[r["image_id"]] = r["score"]
        box = r.get("bbox")
        if not isinstance(box, list) or len(box) != 4:
            raise SubmissionError(f"{where}: bbox must be [x, y, w, h], got {box!r}")
        for v in box:
            _check_number(v, f"{where}: bbox value")
        if box[2] < 0 or box[3] < 0:
            raise SubmissionError(f"{where}: bbox {box} has negative width/height (xywh expected)")
        if task == "segm":
            seg = r.get("segmentation")
            img = images[r["image_id"]]
            if not isinstance(seg, dict) or not isinstance(seg.get("counts"), str):
                raise SubmissionError(f"{where}: segmentation must be an RLE dict with string counts")
            if list(seg.get("size", [])) != [img["height"], img["width"]]:
                raise SubmissionError(
                    f"{where}: mask size {seg.get('size')} != image size {[img['height'], img['width']]}"
                )


def write_submission(results: list[dict], out_dir: str | os.PathLike, file_name: str) -> Path:
    """Write ``out_dir/file_name`` and ``out_dir/<stem>.zip`` (holding that one JSON), atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / file_name
    atomic_write_text(path, json.dumps(results))

    def write_zip(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(path, arcname=file_name)

    atomic_write(path.with_suffix(".zip"), write_zip)
    return path


class TestDevWriter(DatasetEvaluator):
    """Collects predictions over a dataset and writes one validated result file per task.

    ``out_dir/<task>/detections_<testset>_<name>_results.json`` (+ ``.zip``), category ids mapped
    back to the dataset's own ids. Works under DDP (results are gathered on the main process).
    ``max_dets_per_image`` keeps the best N per image, as the LVIS evaluator does (``None``: all,
    as COCO's evaluation takes its own ``maxDets``). Used as ``dataloader.evaluator``, so it
    receives exactly what the evaluation path produces (EMA weights, test-time augmentation).
    ``evaluate`` returns ``{"submission/<task>": {"detections": n, "images": m}}``; the files
    written are in :attr:`files`.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        dataset_name: str,
        out_dir: str | os.PathLike,
        name: str,
        testset: str = "test-dev2017",
        tasks: Iterable[str] = TASKS,
        max_dets_per_image: int | None = None,
    ) -> None:
        self.meta = MetadataCatalog.get(dataset_name)
        if not hasattr(self.meta, "json_file"):
            raise SubmissionError(f"dataset {dataset_name!r} has no image-info JSON (metadata.json_file)")
        self.tasks = tuple(tasks)
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise SubmissionError(f"tasks must be a non-empty subset of {TASKS}, got {list(self.tasks)}")
        self.out_dir = Path(out_dir)
        self.file_name = result_file_name(testset, name)
        self.max_dets_per_image = max_dets_per_image
        self.files: dict[str, Path] = {}
        self.reset()

    def reset(self) -> None:
        self._results: list[dict] = []
        self._image_ids: list[int] = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            self._image_ids.append(inp["image_id"])
            if "instances" in out:
                instances = out["instances"].to("cpu")
                self._results.extend(instances_to_coco_json(instances, inp["image_id"]))

    def evaluate(self) -> dict:
        results = list(itertools.chain(*comm.gather(self._results, dst=0)))
        image_ids = list(itertools.chain(*comm.gather(self._image_ids, dst=0)))
        if not comm.is_main_process():
            return {}
        with open(self.meta.json_file) as f:
            info = json.load(f)
        # detectron2 predicts contiguous class indices; the server wants the dataset's ids.
        to_dataset = {v: k for k, v in self.meta.thing_dataset_id_to_contiguous_id.items()}
        for r in results:
            r["category_id"] = to_dataset[r["category_id"]]
        results.sort(key=lambda r: (r["image_id"], -r["score"]))
        if self.max_dets_per_image is not None:
            results = _best_per_image(results, self.max_dets_per_image)
        written = {}
        for task in self.tasks:
            if task == "segm":
                task_results = [r for r in results if "segmentation" in r]
                if len(task_results) != len(results):
                    raise SubmissionError("segm requested but the model produced no masks")
            else:
                task_results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
            validate_results(task_results, info, image_ids, task)
            self.files[task] = write_submission(task_results, self.out_dir / task, self.file_name)
            written[f"submission/{task}"] = {"detections": len(task_results), "images": len(set(image_ids))}
            logger.info(
                "%s: %d detections on %d images -> %s",
                task,
                len(task_results),
                len(set(image_ids)),
                self.files[task],
            )
        return written


def _best_per_image(results: list[dict], limit: int) -> list[dict]:
    """The first ``limit`` results of each image from a list sorted by (image, -score)."""
    seen: Counter[int] = Counter()
    kept = []
    for r in results:
        seen[r["image_id"]] += 1
        if seen[r["image_id"]] <= limit:
            kept.append(r)
    return kept


# ----------------------------------------------------------------------------- the submission tool
def submission_argument_parser(epilog: str | None = None):
    p = default_argument_parser(epilog=epilog)
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


def run_submission(args) -> dict:
    """The body of ``tools/testdev_submission.py`` (one process; the tool launches one per GPU)."""
    cfg = apply_overrides(LazyConfig.load(args.config_file), args.opts)
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
