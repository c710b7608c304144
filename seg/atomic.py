"""mmengine writes checkpoints in place (``open(path, "wb")``): a run killed during the write leaves a
torn ``iter_N.pth`` under its normal name. Every file mmengine writes to a local path goes through
:func:`backbone.io.atomic_write` instead, by replacing mmengine's ``local`` file backend (public
``register_backend`` API) when :mod:`seg` is imported. This covers ``save_checkpoint`` (so the
``CheckpointHook``), its ``last_checkpoint`` record and every ``dump`` to a local file.
"""

from __future__ import annotations

from pathlib import Path

from mmengine.fileio import LocalBackend, register_backend

from backbone.io import atomic_write


class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend with crash-safe writes (temporary file, fsync, rename)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(filepath, lambda handle: handle.write(obj))

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        atomic_write(filepath, lambda handle: handle.write(obj.encode(encoding)))


def use_atomic_local_writes() -> None:
    """Make :class:`AtomicLocalBackend` mmengine's backend for local paths (idempotent)."""
    register_backend("local", AtomicLocalBackend, force=True, prefixes="")
