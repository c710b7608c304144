"""Exponential moving average of model weights, for training and evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from detectron2.engine import HookBase
from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class ModelEMA:
    """Shadow copy ``ema = decay * ema + (1 - decay) * weight`` of every float parameter and buffer.

    The average starts from the weights the model holds when :meth:`reset` is called (with a
    ``model`` argument: at construction). Training starts it after the initial weights are loaded,
    or restores it from a checkpoint (:meth:`load_state_dict`), as the release did. The state is a
    plain ``state_dict``, so detectron2's ``Checkpointer`` saves and restores it when registered as
    a checkpointable (key ``ema_state`` in the checkpoint).
    """

    def __init__(
        self, model: nn.Module | None = None, decay: float = 0.9999, device: str | None = None
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.model_ema.decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.device = device
        self.state: dict[str, torch.Tensor] = {}
        if model is not None:
            self.reset(model)

    @property
    def initialized(self) -> bool:
        return bool(self.state)

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average at the model's current weights."""
        self.state = {
            k: v.detach().clone().to(self.device or v.device) for k, v in _unwrap(model).state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if not self.initialized:
            raise RuntimeError("ModelEMA.update before reset(model) or load_state_dict(state)")
        for name, value in _unwrap(model).state_dict().items():
            shadow = self.state[name]
            if shadow.dtype.is_floating_point:
                shadow.mul_(self.decay).add_(value.detach().to(shadow.device), alpha=1.0 - self.decay)
            else:
                shadow.copy_(value)

    @contextlib.contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``model`` (e.g. for evaluation)."""
        target = _unwrap(model)
        backup = {k: v.detach().clone() for k, v in target.state_dict().items()}
        target.load_state_dict(self.state)
        try:
            yield
        finally:
            target.load_state_dict(backup)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not self.initialized:
            self.state = {k: v.detach().clone().to(self.device or v.device) for k, v in state.items()}
            return
        missing = set(self.state) - set(state)
        if missing:
            raise KeyError(f"EMA state is missing {len(missing)} entries, e.g. {sorted(missing)[:3]}")
        for k, v in state.items():
            if k in self.state:
                self.state[k].copy_(v)


class EMAHook(HookBase):
    """Update a :class:`ModelEMA` after every optimizer step."""

    def __init__(self, ema: ModelEMA, model: nn.Module) -> None:
        self.ema = ema
        self.model = model

    def after_step(self) -> None:
        self.ema.update(self.model)
