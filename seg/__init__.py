"""EVA-02 semantic segmentation on mmsegmentation 1.x (UperNet).

Importing this package registers, in mmseg's registries, the ``EVA02`` backbone, the
``EVA02LayerDecayOptimizerConstructor``, the ``ShortSideAtLeastResize`` test transform and the
``DeviceAwareDDP`` model wrapper, and lets ``torch.load`` read mmengine's own checkpoints
(see :mod:`seg.safe_load`). Configs pull it in with ``custom_imports = dict(imports=["seg"])``.
"""

from .backbone import EVA02
from .ddp import DeviceAwareDDP
from .layer_decay import EVA02LayerDecayOptimizerConstructor, seg_layer_id
from .safe_load import allow_mmengine_checkpoints
from .transforms import ShortSideAtLeastResize

allow_mmengine_checkpoints()

__all__ = [
    "EVA02",
    "DeviceAwareDDP",
    "EVA02LayerDecayOptimizerConstructor",
    "ShortSideAtLeastResize",
    "allow_mmengine_checkpoints",
    "seg_layer_id",
]
