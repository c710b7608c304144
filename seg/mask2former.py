"""Mask2Former on the EVA-02 pyramid: mmseg's segmentor with build-time checks, and EVA-01's test padding.

The head itself is mmseg 1.x's ``Mask2FormerHead`` (mmdet 3.x pixel decoder, transformer decoder,
Hungarian matching and losses), used unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import mmcv
from mmcv.transforms import BaseTransform
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS, TRANSFORMS
from torch import Tensor, nn


def check_head_fits_pyramid(head: Mapping, backbone: nn.Module) -> None:
    """Raise one clear error if a Mask2Former head config does not fit the backbone's pyramid.

    mmdet's ``MSDeformAttnPixelDecoder`` accepts any ``strides``: they only scale its
    deformable-attention reference points, so a wrong list trains silently with misplaced samples.
    The backbone must expose ``out_strides`` / ``out_channels`` (the ``EVA02`` backbone does).
    """
    strides, in_channels = head.get("strides"), head.get("in_channels")
    own_strides = getattr(backbone, "out_strides", None)
    if strides is not None and own_strides is not None and list(strides) != list(own_strides):
        raise ValueError(
            f"decode_head.strides={list(strides)} do not match the backbone pyramid's strides "
            f"{list(own_strides)} ({type(backbone).__name__}, patch_size "
            f"{getattr(backbone, 'patch_size', '?')}): the pixel decoder places its deformable-attention "
            "samples by these strides"
        )
    own_channels = getattr(backbone, "out_channels", None)
    if in_channels is not None and own_channels is not None and list(in_channels) != list(own_channels):
        raise ValueError(
            f"decode_head.in_channels={list(in_channels)} do not match the backbone pyramid's channels "
            f"{list(own_channels)} ({type(backbone).__name__} {getattr(backbone, 'embed_dim', '')})"
        )
    num_classes = head.get("num_classes")
    class_weight = (head.get("loss_cls") or {}).get("class_weight")
    if class_weight is not None and num_classes is not None and len(class_weight) != num_classes + 1:
        raise ValueError(
            f"decode_head.loss_cls.class_weight has {len(class_weight)} entries; with num_classes="
            f"{num_classes} it needs {num_classes + 1} (the last one weights 'no object')"
        )


@MODELS.register_module()
class Mask2FormerEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` for a Mask2Former head on a pyramid backbone, with two changes.

    * Before the head is built, :func:`check_head_fits_pyramid` compares it with the backbone
      (skipped when a neck sits in between).
    * Sliding-window inference hides ``pad_shape`` from the head: mmseg's ``slide_inference``
      updates only ``img_shape`` per window, while ``Mask2FormerHead.predict`` sizes its masks by
      ``pad_shape`` when present (set by ``ResizeToMultiple`` and test-time padding), which would
      give whole-image masks for every window.
    """

    def _init_decode_head(self, decode_head: Mapping) -> None:
        if not self.with_neck:
            check_head_fits_pyramid(decode_head, self.backbone)
        super()._init_decode_head(decode_head)

    def slide_inference(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        metas = [{k: v for k, v in meta.items() if k != "pad_shape"} for meta in batch_img_metas]
        return super().slide_inference(inputs, metas)


@TRANSFORMS.register_module()
class PadShortSide(BaseTransform):
    """Zero-pad (bottom / right) every image side shorter than ``size`` up to ``size``.

    EVA-01's multi-scale test did this so that sliding windows always see ``size`` pixels, then cut
    the padding off the prediction. Here the padding is recorded as ``img_padding_size`` (left,
    right, top, bottom), which mmseg's ``postprocess_result`` removes before un-flipping and resizing
    to the original shape; add ``"img_padding_size"`` to ``PackSegInputs``' ``meta_keys``.
    Annotations must be loaded after this transform (they are compared at the original size).
    """

    def __init__(self, size: int, pad_val: float = 0) -> None:
        if size <= 0:
            raise ValueError(f"PadShortSide: size must be positive, got {size}")
        self.size = size
        self.pad_val = pad_val

    def transform(self, results: dict) -> dict:
        if "gt_seg_map" in results:
            raise KeyError("PadShortSide: load annotations after it (they are compared at the original size)")
        img = results["img"]
        pad_h, pad_w = max(self.size - img.shape[0], 0), max(self.size - img.shape[1], 0)
        if pad_h or pad_w:
            img = mmcv.impad(img, padding=(0, 0, pad_w, pad_h), pad_val=self.pad_val)
        results["img"] = img
        results["pad_shape"] = img.shape[:2]
        results["img_padding_size"] = (0, pad_w, 0, pad_h)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, pad_val={self.pad_val})"
