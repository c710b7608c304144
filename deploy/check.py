"""Run an exported ONNX graph in onnxruntime and compare it with eager PyTorch."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class SizeCheck:
    """Largest differences over the outputs of one input size.

    ``rel_error`` is the largest absolute difference divided by the largest absolute eager value,
    per output, maximised over outputs; ``same_count`` is False when an output's shape differs
    (the detector found another number of instances); ``same_argmax`` (segmenter logits) is
    judged where the winning class leads by more than the rounding error (:func:`same_decisions`).
    """

    shape: tuple[int, ...]
    max_abs_error: float
    rel_error: float
    same_count: bool
    same_argmax: bool | None = None

    def __str__(self) -> str:
        text = f"input {self.shape}: max abs error {self.max_abs_error:.3g}, relative {self.rel_error:.3g}"
        if not self.same_count:
            text += ", OUTPUT SHAPES DIFFER"
        if self.same_argmax is not None:
            text += f", same argmax: {self.same_argmax}"
        return text


def onnx_session(path: str | os.PathLike, providers: list[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), options, providers=providers or ["CPUExecutionProvider"])


def compare_outputs(
    shape: tuple[int, ...], eager: tuple[torch.Tensor, ...], runtime: list[np.ndarray], argmax_dim: int | None
) -> SizeCheck:
    max_abs, rel, same_count = 0.0, 0.0, True
    for ref, got in zip(eager, runtime):
        ref = ref.detach().cpu().numpy()
        if ref.shape != got.shape:
            same_count = False
            continue
        if ref.size == 0:
            continue
        diff = float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max())
        max_abs = max(max_abs, diff)
        rel = max(rel, diff / max(float(np.abs(ref).max()), 1e-12))
    same_argmax = None
    if argmax_dim is not None and same_count:
        same_argmax = same_decisions(eager[0].detach().cpu().numpy(), runtime[0], argmax_dim, max_abs)
    return SizeCheck(tuple(shape), max_abs, rel, same_count, same_argmax)


def same_decisions(ref: np.ndarray, got: np.ndarray, dim: int, tolerance: float) -> bool:
    """Same argmax along ``dim`` wherever the eager winner leads the runner-up by more than
    ``2 * tolerance`` (the largest difference seen): closer ties may flip within rounding."""
    top2 = np.sort(ref, axis=dim)
    margin = np.take(top2, -1, axis=dim) - np.take(top2, -2, axis=dim)
    differ = ref.argmax(dim) != got.argmax(dim)
    return not bool((differ & (margin > 2 * tolerance)).any())


def check_onnx(
    path: str | os.PathLike,
    graph: nn.Module,
    samples: list[torch.Tensor],
    argmax_dim: int | None = None,
    providers: list[str] | None = None,
) -> list[SizeCheck]:
    """Run ``path`` and ``graph`` (eager) on each sample; one :class:`SizeCheck` per sample."""
    session = onnx_session(path, providers)
    results = []
    graph = graph.eval()
    for x in samples:
        with torch.no_grad():
            eager = graph(x)
        runtime = session.run(None, {"image": x.numpy()})
        results.append(compare_outputs(tuple(x.shape), eager, runtime, argmax_dim))
    return results


def match_detections(
    ref_boxes: np.ndarray, ref_classes: np.ndarray, boxes: np.ndarray, classes: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of detections of the same class whose boxes agree within ``tolerance`` px.

    Greedy in the reference's order, each detection used once, the closest box first. Matching by
    box and class instead of by position: scores of untrained heads are close enough that
    rounding may swap neighbours in the score order without changing the set of detections.
    """
    used = np.zeros(len(boxes), dtype=bool)
    pairs = []
    for i in range(len(ref_boxes)):
        diff = np.abs(boxes - ref_boxes[i]).max(axis=1) if len(boxes) else np.zeros(0)
        diff = np.where(used | (classes != ref_classes[i]), np.inf, diff)
        if len(diff) and diff.min() <= tolerance:
            j = int(diff.argmin())
            used[j] = True
            pairs.append((i, j))
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


@dataclass
class DetectionCheck:
    """Eager detectron2 detections against those of the exported graph, matched by box and class.

    ``matched``: detections paired with an eager one of the same class (box within 1e-3 px);
    errors are over the matched pairs; ``max_mask_error``: largest difference of the M x M
    mask probabilities (whole-detector graph), None for the pyramid graph;
    ``mask_pixels_differing``: pixels of the pasted image masks that differ.
    """

    shape: tuple[int, ...]
    eager_count: int
    onnx_count: int
    matched: int
    max_box_error: float
    max_score_error: float
    max_mask_error: float | None
    mask_pixels_differing: int

    @property
    def same_detections(self) -> bool:
        return self.eager_count == self.onnx_count == self.matched

    def __str__(self) -> str:
        text = (
            f"input {self.shape}: {self.eager_count} eager / {self.onnx_count} onnx detections, "
            f"{self.matched} matched by class and box, max box error {self.max_box_error:.3g} px, "
            f"max score error {self.max_score_error:.3g}"
        )
        if self.max_mask_error is not None:
            text += f", max mask probability error {self.max_mask_error:.3g}"
        return text + f", pasted mask pixels differing {self.mask_pixels_differing}"


def _errors(ref, got, box_tolerance: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Matched pairs and the largest box and score differences between two ``Instances``."""
    ref_boxes, got_boxes = ref.pred_boxes.tensor.numpy(), got.pred_boxes.tensor.numpy()
    i, j = match_detections(
        ref_boxes, ref.pred_classes.numpy(), got_boxes, got.pred_classes.numpy(), box_tolerance
    )
    if not len(i):
        return i, j, 0.0, 0.0
    box = float(np.abs(ref_boxes[i] - got_boxes[j]).max())
    score = float(np.abs(ref.scores.numpy()[i] - got.scores.numpy()[j]).max())
    return i, j, box, score


def check_detector(
    path: str | os.PathLike,
    graph: nn.Module,
    samples: list[torch.Tensor],
    providers: list[str] | None = None,
    box_tolerance: float = 1e-3,
) -> list[DetectionCheck]:
    """Detections of eager detectron2 and of the exported graph, one :class:`DetectionCheck` each.

    Whole-detector graph: its outputs against ``model.inference(..., do_postprocess=False)``
    (boxes, scores, classes, mask probabilities), and :func:`graph_instances` on them against
    ``model([...])`` (pasted masks). Pyramid graph: :func:`detector_instances` (heads in
    PyTorch) against ``model([...])``.
    """
    from detectron2.structures import Boxes, Instances

    from .detector import DetectorGraph
    from .postprocess import detector_instances, graph_instances

    session = onnx_session(path, providers)
    model = graph.model.eval()
    results = []
    for x in samples:
        size = tuple(x.shape[-2:])
        inputs = [{"image": x, "height": size[0], "width": size[1]}]
        outputs = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            final = model(inputs)[0]["instances"]
            whole = isinstance(graph, DetectorGraph)
            raw = model.inference(inputs, do_postprocess=False)[0] if whole else None
        mask_error = None
        if raw is not None:
            got_raw = Instances(size, pred_boxes=Boxes(torch.as_tensor(outputs[0])))
            got_raw.scores = torch.as_tensor(outputs[1])
            got_raw.pred_classes = torch.as_tensor(outputs[2])
            i, j, box, score = _errors(raw, got_raw, box_tolerance)
            mask_error = float(np.abs(raw.pred_masks.numpy()[i] - outputs[3][j]).max()) if len(i) else 0.0
            got = graph_instances(outputs, size)
            count = len(got_raw)
        else:
            got = detector_instances(model, outputs, size)
            count = len(got)
        i_final, j_final, box_final, score_final = _errors(final, got, box_tolerance)
        if raw is None:
            i, box, score = i_final, box_final, score_final
        pixels = 0
        if final.has("pred_masks") and len(i_final):
            pixels = int((final.pred_masks[i_final] != got.pred_masks[j_final]).sum())
        eager_count = len(raw) if raw is not None else len(final)
        check = DetectionCheck(tuple(x.shape), eager_count, count, len(i), box, score, mask_error, pixels)
        results.append(check)
    return results


def seconds_per_image(
    path: str | os.PathLike, graph: nn.Module, sample: torch.Tensor, repeats: int = 5
) -> dict[str, float]:
    """Best-of-``repeats`` seconds per image of eager PyTorch and of onnxruntime (CPU) on ``sample``.

    Interleaved so that machine load affects both alike; one warm-up call each first. The eager
    side of the whole detector is detectron2's own ``model.inference(..., do_postprocess=False)``.
    """
    from .detector import DetectorGraph

    eager = graph
    if isinstance(graph, DetectorGraph):
        inputs = [{"image": sample, "height": sample.shape[-2], "width": sample.shape[-1]}]

        def eager(_):
            return graph.model.inference(inputs, do_postprocess=False)

    session = onnx_session(path)
    feed = {"image": sample.numpy()}
    images = sample.shape[0] if graph.image_rank == 4 else 1
    best = {"eager": float("inf"), "onnxruntime": float("inf")}
    with torch.inference_mode():
        eager(sample), session.run(None, feed)
        for _ in range(repeats):
            start = time.perf_counter()
            eager(sample)
            best["eager"] = min(best["eager"], time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, feed)
            best["onnxruntime"] = min(best["onnxruntime"], time.perf_counter() - start)
    return {k: v / images for k, v in best.items()}
