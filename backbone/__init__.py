"""EVA-02 vision transformer backbone (pure PyTorch)."""

from .checkpoint import CheckpointError, LoadReport, load_checkpoint, read_state_dict
from .convert import from_internal, to_internal
from .lr_decay import layer_id
from .presets import PRESETS, build_backbone
from .pyramid import SimpleFeaturePyramid
from .vit import EVA02ViT

__all__ = [
    "PRESETS",
    "CheckpointError",
    "EVA02ViT",
    "LoadReport",
    "SimpleFeaturePyramid",
    "build_backbone",
    "from_internal",
    "layer_id",
    "load_checkpoint",
    "read_state_dict",
    "to_internal",
]
