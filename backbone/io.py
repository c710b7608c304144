"""The one crash-safe file writer and the one safe checkpoint reader of the toolkit.

Every checkpoint, result file and data file the toolkit writes goes through :func:`atomic_write`
(detectron2 and pre-training checkpoints, test-dev submissions, the toy data set, converted
checkpoints); every checkpoint it reads goes through :func:`read_checkpoint`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from typing import IO, Any

import torch

# Data-only classes that released checkpoints carry besides tensors: the training scripts' argparse
# namespace. Anything else that is not a tensor or a plain container is refused.
SAFE_GLOBALS: tuple = (argparse.Namespace,)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model."""


def _file_mode() -> int:
    """0666 minus the process umask: what ``open(path, "w")`` would give (``mkstemp`` gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it, rename it into place.

    A process killed at any moment leaves either the previous file or the new one at ``path``,
    never a partial file (the rename is atomic on POSIX and Windows); the directory is fsynced too
    so that the rename itself survives a power loss. An interrupted temporary file is named
    ``.<name>.*.tmp``. The file gets the mode a plain ``open`` would give (0644 under umask 022).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fchmod(handle.fileno(), _file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def is_temporary(name: str) -> bool:
    """True for the name of a temporary file :func:`atomic_write` creates (``.<name>.<random>.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files a killed writer left in ``directory``; returns their paths.

    Called when a run starts writing into a directory (one writer per output directory), so
    interrupted writes of an earlier run do not pile up.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if is_temporary(name) and os.path.isfile(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def first_non_finite(obj: Any, prefix: str = "") -> str | None:
    """The key path (``model.blocks.0.attn.qkv.weight``) of the first floating-point tensor in the
    nested containers of ``obj`` that holds a NaN or an infinity, or None."""
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            return prefix or "<tensor>"
        return None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def check_finite(obj: Any, source: str, what: str = "checkpoint") -> None:
    """Refuse NaN or infinite weights: they would train to ``loss: nan`` or evaluate to ``nan`` AP."""
    bad = first_non_finite(obj)
    if bad is not None:
        raise CheckpointError(f"{source}: {what} tensor '{bad}' holds NaN or infinite values")


def _sniff(path: str) -> str | None:
    """Why ``path`` cannot be a PyTorch file, judged from its first bytes (zip archive or pickle)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK") or head[:1] == b"\x80":  # zip archive (torch >= 1.6) or pickle protocol 2+
        return None
    return f"it is neither a zip archive nor a pickle (starts with bytes {head.hex()})"


def read_checkpoint(
    path: str | os.PathLike,
    *,
    allow: Iterable = (),
    trust_pickle: bool = False,
    what: str = "checkpoint",
    allow_non_finite: bool = False,
) -> Any:
    """``torch.load`` a file in safe mode: tensors, plain containers and allow-listed classes only.

    ``allow`` adds data-only classes (or ``(callable, "module.name")`` pairs) for this one call,
    on top of :data:`SAFE_GLOBALS`. ``trust_pickle`` unpickles any object: for files the user
    explicitly trusts, never a default. A floating-point tensor with NaN or infinite values is refused
    (naming its key) unless ``allow_non_finite``. Every failure is one :class:`CheckpointError`
    naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such {what} file")
    not_torch = _sniff(path)
    if not_torch is not None:
        raise CheckpointError(f"{path}: not a readable PyTorch {what}: {not_torch}")
    loaded = _load(path, allow, trust_pickle, what)
    if not allow_non_finite:
        check_finite(loaded, path, what)
    return loaded


def _load(path: str, allow: Iterable, trust_pickle: bool, what: str) -> Any:
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # anything a damaged or foreign pickle raises
            raise CheckpointError(
                f"{path}: not a readable PyTorch {what}: {type(err).__name__}: {err}"
            ) from None
    try:
        # Only what is not allowed already: leaving the context removes its globals again, which
        # would also drop process-wide registrations (seg's mmengine types) listed here.
        present = set(torch.serialization.get_safe_globals())
        extra = [g for g in dict.fromkeys([*SAFE_GLOBALS, *allow]) if g not in present]
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refusing to unpickle Python objects that are not tensors or plain containers "
            f"({reason[:200]}). Not a weights {what}, or one that needs an explicit conversion."
        ) from None
    except Exception as err:  # corrupt input raises EOFError, KeyError, RuntimeError, ...
        raise CheckpointError(
            f"{path}: not a readable PyTorch {what} (truncated or corrupt?): "
            f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
        ) from None
