"""The detector's post-processing that stays outside the graph: back to ``Instances``, masks pasted."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances


def detector_instances(
    outputs: list[np.ndarray] | tuple[torch.Tensor, ...],
    input_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
) -> Instances:
    """``Instances`` from the detector graph's (boxes, scores, classes, masks).

    ``input_size`` is the (H, W) of the graph's input; ``output_size`` the original image's
    (height, width) the eager model was asked for (default: the input size). Boxes are rescaled
    and clipped and masks pasted into full-image bitmaps by detectron2's ``detector_postprocess``,
    the step that ``model([{"image", "height", "width"}])`` adds after the graph's part.
    """
    boxes, scores, classes, masks = (torch.as_tensor(np.asarray(o)) for o in outputs)
    inst = Instances(tuple(int(s) for s in input_size))
    inst.pred_boxes = Boxes(boxes.float())
    inst.scores = scores.float()
    inst.pred_classes = classes.long()
    inst.pred_masks = masks.float()
    height, width = output_size or input_size
    return detector_postprocess(inst, int(height), int(width))
