"""Exportable modules with the graphs' contracts (``docs/deployment.md``).

Each one takes a single ``image`` tensor and returns a tuple of tensors named ``output_names``;
``size_multiple`` is what height and width must be multiples of (1: any size), ``image_rank``
is 4 for batched inputs and 3 for the detector's one image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backbone import EVA02ViT

from .pooling import make_adaptive_pooling_exportable


class BackboneGraph(nn.Module):
    """``image`` (N, 3, H, W), normalised -> ``last_feat`` (N, C, ceil(H / p), ceil(W / p))."""

    output_names = ("last_feat",)
    image_rank = 4

    def __init__(self, net: EVA02ViT, max_size: int = 4096) -> None:
        super().__init__()
        if not isinstance(net, EVA02ViT):
            raise TypeError(f"BackboneGraph needs an EVA02ViT, got {type(net).__name__}")
        self.net = net
        self.size_multiple = 1  # the ViT pads to its patch size inside the graph
        self.max_size = max_size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net.forward_blocks(image, [self.net.depth - 1])[0],)


class SegmenterGraph(nn.Module):
    """mmseg ``EncoderDecoder`` in ``whole`` mode, with its data preprocessor inside.

    ``image`` (N, 3, H, W) RGB pixel values 0-255 -> ``logits`` (N, num_classes, H, W): what
    ``model.inference`` gives in whole mode before the argmax (channel order, normalisation and
    test-time padding of ``data_preprocessor`` applied here, padding cropped off the logits).
    Adaptive average pooling (UperNet's pyramid pooling) is swapped for a size-following version.
    """

    output_names = ("logits",)
    image_rank = 4

    def __init__(self, segmentor: nn.Module, max_size: int = 4096) -> None:
        super().__init__()
        from mmseg.models.segmentors import EncoderDecoder

        if not isinstance(segmentor, EncoderDecoder):
            raise TypeError(
                f"SegmenterGraph needs an mmseg EncoderDecoder, got {type(segmentor).__name__} "
                "(its inference is not a single encode-decode pass)"
            )
        pre = segmentor.data_preprocessor
        # in place: eager results are unchanged (the replacement calls PyTorch's op outside export)
        make_adaptive_pooling_exportable(segmentor)
        self.segmentor = segmentor
        # the graph takes RGB; a preprocessor without bgr_to_rgb feeds the network BGR
        self.to_bgr = not pre.channel_conversion
        self.normalize = bool(pre._enable_normalize)
        if self.normalize:
            self.register_buffer("mean", pre.mean.detach().clone().reshape(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", pre.std.detach().clone().reshape(1, -1, 1, 1), persistent=False)
        test_pad = pre.test_cfg or {}
        self.pad_size = test_pad.get("size")
        self.pad_divisor = test_pad.get("size_divisor")
        self.pad_val = float(pre.pad_val)
        self.size_multiple = 1
        self.max_size = max_size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        h, w = image.shape[-2:]
        x = image.flip(1) if self.to_bgr else image
        if self.normalize:
            x = (x - self.mean) / self.std
        pad_h, pad_w = 0, 0
        if self.pad_size is not None:
            pad_h = torch.sym_max(self.pad_size[0] - h, 0)
            pad_w = torch.sym_max(self.pad_size[1] - w, 0)
        if self.pad_divisor is not None:
            pad_h = pad_h + (-(h + pad_h)) % self.pad_divisor
            pad_w = pad_w + (-(w + pad_w)) % self.pad_divisor
        x = F.pad(x, (0, pad_w, 0, pad_h), value=self.pad_val)
        padded = (x.shape[-2], x.shape[-1])
        metas = [dict(img_shape=padded, pad_shape=padded, ori_shape=padded)]
        logits = self.segmentor.encode_decode(x, metas)
        return (logits[:, :, :h, :w],)


class DetectorPyramidGraph(nn.Module):
    """detectron2 Cascade Mask R-CNN up to its feature pyramid (the dense, size-dependent part).

    ``image`` (3, H, W) in the config's input format, already resized by the test-time resize ->
    the pyramid maps ``p2`` .. ``p6`` (1, C, H' / s, W' / s) of the padded image, padding and
    normalisation inside (as ``model.preprocess_image``). Proposals, RoI heads and mask pasting
    run in PyTorch on these maps: :func:`deploy.postprocess.detector_instances`. The whole
    detector in one graph is :class:`deploy.DetectorGraph`; this part serves the models it
    refuses (soft-NMS).
    """

    image_rank = 3

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from detectron2.modeling import GeneralizedRCNN

        if not isinstance(model, GeneralizedRCNN):
            name = type(model).__name__
            raise TypeError(f"DetectorPyramidGraph needs a detectron2 GeneralizedRCNN, got {name}")
        self.model = model
        self.output_names = tuple(sorted(model.backbone.output_shape()))
        square = model.backbone.padding_constraints.get("square_size", 0)
        self.size_multiple = 1  # padded inside (to the square or to size_divisibility)
        self.max_size = square or 4096

    def preprocess(self, image: torch.Tensor):
        """``model.preprocess_image`` with the padding written from the symbolic size."""
        from detectron2.structures import ImageList

        model = self.model
        h, w = image.shape[-2:]
        x = (image - model.pixel_mean) / model.pixel_std
        # as ImageList.from_tensors: up to the square if any, then to a multiple of the divisibility
        square = model.backbone.padding_constraints.get("square_size", 0)
        d = max(model.backbone.size_divisibility, 1)
        target_h, target_w = (square, square) if square else (h, w)
        target_h, target_w = target_h + (-target_h) % d, target_w + (-target_w) % d
        x = F.pad(x, (0, target_w - w, 0, target_h - h))
        return ImageList(x[None], [(h, w)])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.backbone(self.preprocess(image).tensor)
        return tuple(features[name] for name in self.output_names)
