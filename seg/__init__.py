"""EVA-02 semantic segmentation on mmsegmentation 1.x (UperNet, Mask2Former).

Importing this package registers, in mmseg's registries, the ``EVA02`` backbone, the
``EVA02LayerDecayOptimizerConstructor``, the ``ShortSideAtLeastResize`` test transform and the
``DeviceAwareDDP`` model wrapper, the Mask2Former pieces (``Mask2FormerEncoderDecoder``,
``PadShortSide``) and the ``SegmentorCheckpointHook``, and lets ``torch.load`` read mmengine's own
checkpoints (see :mod:`seg.safe_load`) and makes mmengine's local writes atomic (:mod:`seg.atomic`).
Configs pull it in with ``custom_imports = dict(imports=["seg"])``.
"""

from .amp import CPUAutocastOptimWrapper
from .atomic import AtomicLocalBackend, use_atomic_local_writes
from .backbone import EVA02
from .ddp import DeviceAwareDDP
from .finetune import SegmentorCheckpointHook
from .layer_decay import EVA02LayerDecayOptimizerConstructor, seg_layer_id
from .mask2former import Mask2FormerEncoderDecoder, PadShortSide
from .resume import RNGStateHook
from .safe_load import allow_mmengine_checkpoints
from .transforms import ShortSideAtLeastResize

allow_mmengine_checkpoints()
use_atomic_local_writes()

__all__ = [
    "CPUAutocastOptimWrapper",
    "AtomicLocalBackend",
    "EVA02",
    "DeviceAwareDDP",
    "EVA02LayerDecayOptimizerConstructor",
    "Mask2FormerEncoderDecoder",
    "PadShortSide",
    "RNGStateHook",
    "SegmentorCheckpointHook",
    "ShortSideAtLeastResize",
    "allow_mmengine_checkpoints",
    "seg_layer_id",
    "use_atomic_local_writes",
]
