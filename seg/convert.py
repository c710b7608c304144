"""Checkpoint conversion to mmseg (``--to seg``): a ``pretrained`` file for the ``EVA02`` backbone."""

from __future__ import annotations

import torch

from backbone.conversion import SEG_PREFIX, Report, convert_backbone, finish_report


def to_mmseg(
    raw: dict[str, torch.Tensor], source: str = "<state dict>", patch_size: int | None = None, **options
) -> tuple[dict, Report]:
    """``{"state_dict": {"backbone.<name>": ...}}``; the decode heads of an input are not carried."""
    conv = convert_backbone(raw, "seg", source, patch_size=patch_size or 16, **options)  # released: patch 16
    report = finish_report(conv, {})
    return {"state_dict": {SEG_PREFIX + k: v for k, v in conv.sd.items()}}, report
