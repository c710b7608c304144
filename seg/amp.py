"""bf16 autocast training without a GPU.

mmengine's ``AmpOptimWrapper`` refuses to start without CUDA/NPU/MLU, yet bf16 autocast runs on
CPU and needs no loss scaling: this wrapper is ``OptimWrapper`` with ``torch.autocast`` around the
forward pass, which is all ``AmpOptimWrapper`` adds for bf16 apart from the scaler.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS
from torch import nn


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    def __init__(self, *args, dtype: str | torch.dtype = "bfloat16", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if self.cast_dtype != torch.bfloat16:
            raise ValueError(f"CPU autocast trains in bfloat16 only, got dtype={dtype!r}")

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast("cpu", dtype=self.cast_dtype):
            yield
