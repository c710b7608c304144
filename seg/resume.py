"""Exact resume for mmengine training: the RNG states go into every checkpoint and come back on resume.

mmengine's ``IterBasedTrainLoop`` already brings the data stream back to its position on resume (it
draws again the batches the run had consumed, with the same seeded sampler and workers); what it does
not restore is the torch RNG the model draws from (drop path, the OHEM sampler), which a fresh process
has spent differently. This hook saves the states with each checkpoint and puts the torch state back
just before the first resumed iteration. Python's and NumPy's generators are drawn by the data pipeline
only, so replaying the data stream already brings them where they were.
"""

from __future__ import annotations

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from backbone.rng import capture_rng, restore_rng


@HOOKS.register_module()
class RNGStateHook(Hook):
    priority = "VERY_LOW"

    def __init__(self) -> None:
        self._pending: dict | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["rng"] = capture_rng()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = checkpoint.get("rng")

    def before_train(self, runner) -> None:
        if runner.iter == 0:  # weights loaded to start from (load_from), not a resume
            self._pending = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:
            restore_rng(self._pending, parts=("torch",))
            self._pending = None
