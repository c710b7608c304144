"""Layer-wise learning-rate decay for the detector's parameters."""

from __future__ import annotations

from backbone import layer_id


def eva02_lr_factor(name: str, lr_decay_rate: float, num_layers: int) -> float:
    """lr scale of one parameter of the whole detector (``lr_factor_func`` of detectron2's
    ``get_default_optimizer_params``).

    Backbone ViT parameters (``backbone.net.*``) follow the EVA-02/ViTDet rule: position and
    patch embedding -> layer 0, block ``i`` -> ``i + 1``, the rest -> ``num_layers + 1``; the
    factor is ``lr_decay_rate ** (num_layers + 1 - layer)``. Pyramid, RPN and RoI heads get 1.
    """
    if not name.startswith("backbone.net."):
        return 1.0
    return lr_decay_rate ** (num_layers + 1 - layer_id(name[len("backbone.net.") :], num_layers))
