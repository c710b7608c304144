"""Let ``torch.load``'s safe mode read mmengine's own training checkpoints.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True`` and mmengine 0.10.7 calls it
without arguments, so ``--resume`` fails on the checkpoints mmengine itself wrote: they hold the
message hub (``HistoryBuffer`` objects backed by numpy arrays) and numpy scalars. Rather than
turning the safe loader off (which would unpickle arbitrary code from any downloaded file), we
allow-list exactly the data-only types those checkpoints contain. The list is process-wide and
is applied when :mod:`seg` is imported.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _history_buffer_method(owner: object, name: str):
    """Stand-in for ``getattr`` while unpickling: only a ``HistoryBuffer`` statistics method.

    ``HistoryBuffer.__getstate__`` stores its statistics methods, which pickle as
    ``getattr(HistoryBuffer, "mean")``; a general ``getattr`` must not be allowed.
    """
    attr = vars(HistoryBuffer).get(name) if owner is HistoryBuffer else None
    if not callable(attr) or name.startswith("_"):
        raise pickle.UnpicklingError(f"refusing getattr({owner!r}, {name!r}) while loading a checkpoint")
    return getattr(HistoryBuffer, name)


def mmengine_checkpoint_globals() -> list:
    """The non-tensor types found in mmengine runner checkpoints (message hub, numpy logs)."""
    from numpy._core import multiarray  # numpy >= 2 pickles under numpy._core

    dtype_classes = {
        type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_, np.uint8)
    }
    return [
        HistoryBuffer,
        (_history_buffer_method, "builtins.getattr"),
        np.ndarray,
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
        (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]


def allow_mmengine_checkpoints() -> None:
    """Register :func:`mmengine_checkpoint_globals` with ``torch.serialization`` (idempotent)."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
