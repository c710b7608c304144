"""FLOP counting that includes attention on every device.

``torch.utils.flop_counter.FlopCounterMode`` knows the CUDA attention kernels but not the CPU one
(``aten._scaled_dot_product_flash_attention_for_cpu``): on CPU, attention counts 0 FLOPs. We add the
CPU kernel and its backward with torch's own SDPA formulas (2 FLOPs per multiply-add; q @ k^T and
attn @ v forward, five matmuls backward), so CPU and GPU counts agree. Softmax, scaling, norms and
element-wise ops are not counted, as everywhere in torch's counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


ATTENTION_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` (no display) that also counts the CPU attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS)


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)``, attention included (run under ``no_grad`` for inference)."""
    with flop_counter() as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()
