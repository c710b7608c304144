"""What stays outside the detector graphs: mask pasting (and, for the pyramid graph, the heads)."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn


@torch.no_grad()
def detector_instances(
    model: nn.Module,
    features: list[np.ndarray] | tuple[torch.Tensor, ...],
    input_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
) -> Instances:
    """``Instances`` from the detector graph's pyramid maps, as ``model([...])[0]["instances"]``.

    ``model`` is the eager detector (its RPN and RoI heads are run here); ``input_size`` is the
    (H, W) of the graph's input and ``output_size`` the (height, width) the detections are wanted
    at (default: the input size). Boxes are rescaled and masks pasted by detectron2's
    ``detector_postprocess``; soft-NMS and maskness re-scoring, when configured, happen in the
    RoI heads as in eager inference.
    """
    names = sorted(model.backbone.output_shape())
    if len(features) != len(names):
        raise ValueError(f"expected {len(names)} feature maps {names}, got {len(features)}")
    device = model.pixel_mean.device
    maps = {n: torch.as_tensor(np.asarray(f)).to(device) for n, f in zip(names, features)}
    padded = maps[names[0]].shape[-2:]
    stride = model.backbone.output_shape()[names[0]].stride
    # only the sizes of the ImageList are read by the heads (anchors, clipping)
    images = ImageList(torch.empty(1, 0, padded[0] * stride, padded[1] * stride, device=device), [input_size])
    proposals, _ = model.proposal_generator(images, maps, None)
    results, _ = model.roi_heads(images, maps, proposals, None)
    height, width = output_size or input_size
    return detector_postprocess(results[0], int(height), int(width))


def graph_instances(
    outputs: list[np.ndarray] | tuple[torch.Tensor, ...],
    input_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
) -> Instances:
    """``Instances`` from the outputs of the whole-detector graph (:class:`deploy.DetectorGraph`).

    ``outputs`` are ``boxes``, ``scores``, ``classes``, ``masks`` as the graph returns them for an
    input of ``input_size`` (H, W); the result is what ``model([{"image", "height", "width"}])``
    gives at ``output_size`` (default: the input size): detectron2's ``detector_postprocess``
    rescales the boxes and pastes the M x M mask probabilities into binary image masks. Maskness
    re-scoring, when the model has it, already happened in the graph (as in the eager heads).
    """
    if len(outputs) != 4:
        raise ValueError(f"expected 4 detector outputs (boxes, scores, classes, masks), got {len(outputs)}")
    boxes, scores, classes, masks = (torch.as_tensor(np.asarray(o)) for o in outputs)
    instances = Instances(tuple(int(s) for s in input_size))
    instances.pred_boxes = Boxes(boxes.float())
    instances.scores = scores.float()
    instances.pred_classes = classes.long()
    instances.pred_masks = masks.float()
    height, width = output_size or input_size
    return detector_postprocess(instances, int(height), int(width))
