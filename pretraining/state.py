"""Pre-training checkpoints: what is saved, and how a run is restored from one."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import torch

from backbone.io import atomic_save, read_checkpoint

from .recipes import PretrainConfig

FORMAT = "eva02_mim_pretrain"
LAST = "checkpoint-last.pth"
# Options that must not change across a resume: they define the model or the sample stream.
_FIXED = (
    "model",
    "model_overrides",
    "img_size",
    "patch_size",
    "teacher",
    "seed",
    "batch_size",
    "total_batch_size",
)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def save_training_state(
    path: str,
    student: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    step: int,
    cfg: PretrainConfig,
    world_size: int,
    history: list[tuple[int, float]] | None = None,
) -> None:
    """Atomically write model, optimizer, scaler, step and RNG states (plain tensors and containers only),
    and the logged loss history, so that a resumed run reports the whole run."""
    state = {
        "format": FORMAT,
        "model": student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "world_size": world_size,
        "history": [[int(s), float(v)] for s, v in (history or [])],
        "config": _plain(asdict(cfg)),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    atomic_save(state, path)


def resolve_resume(resume: str, output_dir: str) -> str | None:
    if not resume:
        return None
    if resume == "auto":
        path = os.path.join(output_dir, LAST)
        return path if os.path.isfile(path) else None
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"{resume}: checkpoint to resume from not found")
    return resume


def load_training_state(path: str) -> dict[str, Any]:
    state = read_checkpoint(path, what="pre-training checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pre-training checkpoint of tools/pretrain.py (no format '{FORMAT}')")
    return state


def check_compatible(state: dict[str, Any], cfg: PretrainConfig, world_size: int, path: str) -> None:
    saved = state["config"]
    now = _plain(asdict(cfg))
    diff = [f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in _FIXED if saved.get(k) != now[k]]
    if state.get("world_size") != world_size:
        diff.append(f"world_size: saved {state.get('world_size')}, now {world_size}")
    if diff:
        raise ValueError(f"{path}: cannot resume with different settings: " + "; ".join(diff))


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng"]["torch"])
    cuda_states = state["rng"].get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
