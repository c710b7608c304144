"""A DistributedDataParallel wrapper that also works for CPU (gloo) training."""

from __future__ import annotations

from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from torch import nn


@MODEL_WRAPPERS.register_module()
class DeviceAwareDDP(MMDistributedDataParallel):
    """mmengine's DDP wrapper, minus ``device_ids`` when the model lives on the CPU.

    mmengine's runner always passes ``device_ids=[LOCAL_RANK]``, which torch rejects for CPU
    modules; on GPUs this behaves exactly like ``MMDistributedDataParallel``. Registered in
    mmengine's root registry because the runner looks wrapper types up there.
    """

    def __init__(self, module: nn.Module, device_ids: list[int] | None = None, **kwargs) -> None:
        on_cpu = all(p.device.type == "cpu" for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)
