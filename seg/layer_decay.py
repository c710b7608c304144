"""Layer-wise learning-rate decay for EVA-02 parameter names (an mmengine optimizer constructor)."""

from __future__ import annotations

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

from backbone import layer_id


def seg_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a parameter of the whole segmentor.

    Backbone (``backbone.``) parameters follow the EVA-02 rule of :func:`backbone.layer_id`
    (embeddings -> 0, block ``i`` -> ``i + 1``, rest incl. the pyramid -> ``num_layers + 1``);
    the decode and auxiliary heads get ``num_layers + 1``.
    """
    if not name.startswith("backbone."):
        return num_layers + 1
    return layer_id(name[len("backbone.") :], num_layers)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class EVA02LayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with lr ``base_lr * layer_decay_rate ** (num_layers + 1 - layer_id)``.

    ``paramwise_cfg = dict(num_layers=<ViT depth>, layer_decay_rate=<rate>)``, as released. As in
    the release, 1-D parameters and biases get no weight decay; every other parameter (including
    ``pos_embed`` and ``cls_token``) gets the optimizer's ``weight_decay``. mmseg's own
    ``LearningRateDecayOptimizerConstructor`` only understands BEiT/ConvNeXt names.

    Optional ``paramwise_cfg.layer0_prefixes``: name prefixes put in layer 0 with the embeddings
    (EVA-01's Mask2Former recipe does this for the head's query, level, class and mask embeddings).
    """

    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        cfg = self.paramwise_cfg
        missing = [k for k in ("num_layers", "layer_decay_rate") if k not in cfg]
        if missing:
            raise KeyError(
                f"EVA02LayerDecayOptimizerConstructor: paramwise_cfg lacks {missing} (got {dict(cfg)})"
            )
        num_layers, rate = int(cfg["num_layers"]), float(cfg["layer_decay_rate"])
        layer0 = tuple(cfg.get("layer0_prefixes", ()))
        groups: dict[str, dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim == 1 or name.endswith(".bias")
            lid = 0 if layer0 and name.startswith(layer0) else seg_layer_id(name, num_layers)
            key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
            if key not in groups:
                scale = rate ** (num_layers + 1 - lid)
                groups[key] = {
                    "params": [],
                    "param_names": [],
                    "lr": self.base_lr * scale,
                    "lr_scale": scale,
                    "weight_decay": 0.0 if no_decay else self.base_wd,
                    "group_name": key,
                }
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
        print_log(
            f"EVA-02 layer decay {rate} over {num_layers} layers: {len(groups)} parameter groups",
            logger="current",
        )
        params.extend(groups[k] for k in sorted(groups, key=lambda k: (int(k.split("_")[1]), k)))
