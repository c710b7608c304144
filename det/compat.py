"""Compatibility shims for third-party packages on current numpy."""

from __future__ import annotations

import numpy as np


def apply() -> None:
    """Restore the numpy aliases that ``lvis==0.5.3`` still uses (removed in numpy 1.24/2.0).

    ``lvis.eval`` calls ``np.float``; on numpy 2 that raises ``AttributeError``. The alias
    is the builtin ``float``, exactly what numpy provided before the removal.
    """
    for name, value in (("float", float), ("int", int), ("bool", bool)):
        if name not in np.__dict__:
            setattr(np, name, value)
