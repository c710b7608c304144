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


@dataclass
class DetectionCheck:
    """Eager detections against those from the exported pyramid + :func:`detector_instances`."""

    shape: tuple[int, ...]
    eager_count: int
    onnx_count: int
    same_classes: bool
    max_box_error: float
    max_score_error: float
    mask_pixels_differing: int

    def __str__(self) -> str:
        return (
            f"input {self.shape}: {self.eager_count} eager / {self.onnx_count} onnx detections, "
            f"same classes: {self.same_classes}, max box error {self.max_box_error:.3g} px, "
            f"max score error {self.max_score_error:.3g}, mask pixels differing {self.mask_pixels_differing}"
        )


def check_detector(
    path: str | os.PathLike, graph: nn.Module, samples: list[torch.Tensor], providers: list[str] | None = None
) -> list[DetectionCheck]:
    """Detections of the eager model and of the exported graph (heads in PyTorch) per sample."""
    from .postprocess import detector_instances

    session = onnx_session(path, providers)
    model = graph.model.eval()
    results = []
    for x in samples:
        size = tuple(x.shape[-2:])
        with torch.no_grad():
            ref = model([{"image": x, "height": size[0], "width": size[1]}])[0]["instances"]
        got = detector_instances(model, session.run(None, {"image": x.numpy()}), size)
        same = len(ref) == len(got)
        classes = same and bool((ref.pred_classes == got.pred_classes).all())
        box = float((ref.pred_boxes.tensor - got.pred_boxes.tensor).abs().max()) if same and len(ref) else 0.0
        score = float((ref.scores - got.scores).abs().max()) if same and len(ref) else 0.0
        masks = int((ref.pred_masks != got.pred_masks).sum()) if same and ref.has("pred_masks") else 0
        results.append(DetectionCheck(tuple(x.shape), len(ref), len(got), classes, box, score, masks))
    return results


def seconds_per_image(
    path: str | os.PathLike, graph: nn.Module, sample: torch.Tensor, repeats: int = 5
) -> dict[str, float]:
    """Best-of-``repeats`` seconds per image of eager PyTorch and of onnxruntime (CPU) on ``sample``.

    Interleaved so that machine load affects both alike; one warm-up call each first.
    """
    session = onnx_session(path)
    feed = {"image": sample.numpy()}
    images = sample.shape[0] if graph.image_rank == 4 else 1
    best = {"eager": float("inf"), "onnxruntime": float("inf")}
    with torch.inference_mode():
        graph(sample), session.run(None, feed)
        for _ in range(repeats):
            start = time.perf_counter()
            graph(sample)
            best["eager"] = min(best["eager"], time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, feed)
            best["onnxruntime"] = min(best["onnxruntime"], time.perf_counter() - start)
    return {k: v / images for k, v in best.items()}
