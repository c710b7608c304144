"""Layer ids for layer-wise learning-rate decay, shared by det, seg and pre-training."""

from __future__ import annotations

import re

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """Layer id of a ViT parameter name (a prefix such as ``backbone.net.`` is allowed).

    Embeddings (``cls_token``, ``pos_embed``, ``patch_embed``) -> 0, block ``i`` -> ``i + 1``,
    everything else -> ``depth + 1``. The learning rate scale is then
    ``decay ** (depth + 1 - layer_id)``.
    """
    match = _BLOCK.search(name)
    if match:
        return int(match.group(1)) + 1
    leaf = name.rsplit(".", 3)
    if any(part in ("cls_token", "pos_embed", "patch_embed", "mask_token") for part in leaf):
        return 0
    return depth + 1
