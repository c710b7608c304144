"""Whole-segmentor checkpoints (``load_from``): class-count check and fine-tuning to a new label set.

EVA-01's ADE20K Mask2Former starts from its COCO-Stuff-164K model (171 classes) and trains on 150
classes. mmengine's loader would skip the tensors whose shapes differ with a warning and go on; at
test time that silently evaluates a random classifier. :class:`SegmentorCheckpointHook` turns this
into one decision per checkpoint:

* training from ``load_from`` with ``reinit_class_layers=True``: the class-dependent tensors whose
  shapes differ are dropped from the checkpoint before loading (the model keeps their fresh
  initialisation) and listed in the log; every other tensor must match and is loaded;
* anything else (testing, a config without ``reinit_class_layers``): a class-count mismatch
  raises one error naming the checkpoint, the tensors and both class counts.

Any other shape mismatch or tensor missing from the checkpoint is an error in every case: a
whole-segmentor checkpoint of another architecture is not a starting point.
"""

from __future__ import annotations

import os.path as osp
import re
from collections.abc import Mapping, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.optim import OptimWrapper
from mmseg.registry import HOOKS
from torch import nn

# Classifier tensors of mmseg's heads: Mask2Former's class embedding (num_classes + 1 rows, the last
# one is "no object") and the 1x1 `conv_seg` of BaseDecodeHead heads (UperNet, FCN auxiliary).
CLASS_LAYER_PATTERNS = (r"^decode_head\.cls_embed\.", r"^(decode_head|auxiliary_head)\.conv_seg\.")


class CheckpointMismatchError(ValueError):
    """A whole-segmentor checkpoint does not fit the model built from the config."""


def _strip_wrapper_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def compare_state(
    checkpoint_state: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    class_layer_patterns: Sequence[str] = CLASS_LAYER_PATTERNS,
) -> tuple[list[str], list[str], list[str]]:
    """(class-dependent keys whose shapes differ, other keys whose shapes differ, keys the checkpoint lacks).

    Keys are the model's (wrapper prefix ``module.`` removed from the checkpoint's).
    """
    ckpt = _strip_wrapper_prefix(checkpoint_state)
    class_keys, other_keys, missing = [], [], []
    for key, value in model_state.items():
        if key not in ckpt:
            missing.append(key)
        elif tuple(ckpt[key].shape) != tuple(value.shape):
            is_class = any(re.search(p, key) for p in class_layer_patterns)
            (class_keys if is_class else other_keys).append(key)
    return class_keys, other_keys, missing


def _shapes(keys: Sequence[str], ckpt: Mapping, model_state: Mapping) -> str:
    return ", ".join(
        f"{k} {tuple(ckpt[k].shape)} -> {tuple(model_state[k].shape)} (checkpoint -> model)" for k in keys
    )


def _model(runner) -> nn.Module:
    """The segmentor itself: without DDP wrappers and without the TTA model (``--tta``), which
    mmengine's loader also looks through."""
    model = runner.model
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


@HOOKS.register_module()
class SegmentorCheckpointHook(Hook):
    """Check (and for fine-tuning, adapt) whole-segmentor checkpoints before mmengine loads them.

    Args:
        reinit_class_layers: when training from ``load_from`` (not resuming), re-initialise the
            class-dependent tensors whose shapes differ instead of refusing the checkpoint.
        require_load_from: a training run must start from ``load_from`` (an existing file), e.g.
            ADE20K fine-tuned from the COCO-Stuff model; ``load_from_hint`` says how to make it.
        load_from_hint: appended to the missing-``load_from`` message.
        class_layer_patterns: regular expressions of the class-dependent parameter names.
    """

    priority = "VERY_HIGH"

    def __init__(
        self,
        reinit_class_layers: bool = False,
        require_load_from: bool = False,
        load_from_hint: str = "",
        class_layer_patterns: Sequence[str] = CLASS_LAYER_PATTERNS,
    ) -> None:
        self.reinit_class_layers = reinit_class_layers
        self.require_load_from = require_load_from
        self.load_from_hint = load_from_hint
        self.class_layer_patterns = tuple(class_layer_patterns)
        self.reinitialised: list[str] = []

    @staticmethod
    def _training(runner) -> bool:
        # Runner.train() builds the optimizer before `before_run` and before loading; test() never does.
        return isinstance(runner.optim_wrapper, OptimWrapper)

    def before_run(self, runner) -> None:
        if not (self._training(runner) and self.require_load_from):
            return
        load_from, resume = runner.cfg.get("load_from"), bool(runner.cfg.get("resume", False))
        if resume and load_from:
            raise ValueError(
                f"resume=True with load_from={load_from!r}: mmengine would resume from that "
                "fine-tuning source instead of this run's work_dir; add --cfg-options load_from=None"
            )
        if resume:
            return
        if not load_from or not osp.isfile(load_from):
            what = "no load_from given" if not load_from else f"load_from={load_from!r} does not exist"
            raise FileNotFoundError(
                f"this config fine-tunes a whole segmentor, but {what}. {self.load_from_hint}".strip()
            )

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", checkpoint)
        model = _model(runner)
        model_state = model.state_dict()
        class_keys, other_keys, missing = compare_state(state, model_state, self.class_layer_patterns)
        source = runner.cfg.get("load_from") or "the checkpoint"
        ckpt = _strip_wrapper_prefix(state)
        if other_keys:
            raise CheckpointMismatchError(
                f"{source}: tensors of another architecture: {_shapes(other_keys[:5], ckpt, model_state)}"
            )
        missing = [k for k in missing if not any(re.search(p, k) for p in self.class_layer_patterns)]
        if missing:
            raise CheckpointMismatchError(
                f"{source}: not a checkpoint of this segmentor; {len(missing)} tensors missing, "
                f"e.g. {missing[:5]}"
            )
        if not class_keys:
            return
        ckpt_classes = len(checkpoint.get("meta", {}).get("dataset_meta", {}).get("classes", ())) or "?"
        model_classes = getattr(getattr(model, "decode_head", None), "num_classes", "?")
        # (Runner.resume() does not call this hook: only load_from / test checkpoints arrive here.)
        if not (self.reinit_class_layers and self._training(runner)):
            raise CheckpointMismatchError(
                f"{source} was trained for {ckpt_classes} classes, the config's model has "
                f"{model_classes}: {_shapes(class_keys, ckpt, model_state)}. Use the config the "
                "checkpoint was trained with, or fine-tune from it with a config whose "
                "SegmentorCheckpointHook sets reinit_class_layers=True."
            )
        prefixed = {re.sub(r"^module\.", "", k): k for k in state}
        for key in class_keys:
            del state[prefixed[key]]
        self.reinitialised = list(class_keys)
        print_log(
            f"{source}: {ckpt_classes} -> {model_classes} classes; re-initialised (not loaded): "
            f"{_shapes(class_keys, ckpt, model_state)}; all other tensors loaded",
            logger="current",
        )
