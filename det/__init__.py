"""EVA-02 Cascade Mask R-CNN on an unmodified detectron2 (ViTDet style).

Importing the package applies the small compatibility shims of :mod:`det.compat`
and registers the extra datasets of :mod:`det.datasets`.
"""

from . import compat as _compat

_compat.apply()

from .datasets import register_all  # noqa: E402

register_all()
