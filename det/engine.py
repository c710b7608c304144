"""Training and evaluation loop for lazy configs (the body of ``tools/lazyconfig_train_net.py``).

Same structure and config keys as detectron2's own lazy-config script, plus what this
toolkit needs on top of an unmodified detectron2: CPU fallback and CPU (gloo) DDP, EVA-02
weight loading, atomic checkpoints, model EMA (``train.model_ema.*``) and test-time
augmentation (``test.aug.*``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.structures import Boxes
from detectron2.utils import comm
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from backbone import CheckpointError, load_checkpoint, read_state_dict
from backbone.io import atomic_save, read_checkpoint, remove_stale_temporaries
from backbone.overrides import OverrideError, checked_dotlist
from backbone.rng import capture_rng, restore_rng

from .ema import EMAHook, ModelEMA
from .tta import tta_from_config

logger = logging.getLogger("detectron2")

_PRECISIONS = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class AutocastModel(nn.Module):
    """Runs the wrapped model under ``torch.autocast``.

    For bf16 training off CUDA: detectron2's ``AMPTrainer`` autocasts through ``torch.cuda.amp``,
    which leaves CPU ops in fp32. bf16 needs no loss scaling, so the plain trainer suffices.
    ``fp32_outputs`` turns predicted boxes, scores and masks back to float32 for the evaluators
    (numpy has no bfloat16).
    """

    def __init__(
        self, model: nn.Module, device_type: str, dtype: torch.dtype, fp32_outputs: bool = False
    ) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype, self.fp32_outputs = model, device_type, dtype, fp32_outputs

    def forward(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            outputs = self.model(*args, **kwargs)
        if self.fp32_outputs:
            for out in outputs:
                instances = out.get("instances")
                for name, value in instances.get_fields().items() if instances is not None else ():
                    if isinstance(value, Boxes):
                        value.tensor = value.tensor.float()
                    elif isinstance(value, torch.Tensor) and value.is_floating_point():
                        instances.set(name, value.float())
        return outputs


def _precision(amp_cfg, key: str) -> torch.dtype:
    name = str(amp_cfg.get("precision", "float16"))
    if name not in _PRECISIONS:
        raise ValueError(f"{key}.precision={name!r}: expected one of {sorted(_PRECISIONS)}")
    return _PRECISIONS[name]


def inference_autocast(cfg, model: nn.Module, device: str) -> nn.Module:
    """``test.amp``: the model under autocast for evaluation (bf16 on CPU or GPU, fp16 on GPU)."""
    amp_cfg = cfg.get("test", {}).get("amp", {})
    if not amp_cfg.get("enabled", False):
        return model
    dtype = _precision(amp_cfg, "test.amp")
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if device_type == "cpu" and dtype != torch.bfloat16:
        raise ValueError("test.amp: only bfloat16 autocast runs on CPU")
    return AutocastModel(model, device_type, dtype, fp32_outputs=True)


def apply_overrides(cfg, overrides: list[str] | None):
    """detectron2's ``LazyConfig.apply_overrides`` after :func:`backbone.overrides.checked_dotlist`:
    an override naming a setting the config lacks is refused (``+key=value`` adds one on purpose)."""
    return LazyConfig.apply_overrides(cfg, checked_dotlist(cfg, overrides or []))


def refuse_bad_overrides(config_file: str, overrides: list[str] | None) -> None:
    """For the tools: an unknown override key ends the run here with one line (exit status 1),
    before any process, data set or model is started."""
    try:
        apply_overrides(LazyConfig.load(config_file), overrides)
    except OverrideError as err:
        raise SystemExit(f"error: {err}") from None


def resolve_device(cfg) -> str:
    """``train.device``, falling back to CPU (with a warning) when CUDA is asked for but absent."""
    device = str(cfg.train.get("device", "cuda"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("train.device=%s but CUDA is not available: running on CPU", device)
        device = "cpu"
    cfg.train.device = device
    return device


def create_ddp(model: nn.Module, device: str, *, fp16_compression: bool = False, **ddp_kwargs) -> nn.Module:
    """DistributedDataParallel when more than one process runs; CPU (gloo) too.

    detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which is a
    CUDA-only argument; on CPU no device ids are given and fp16 gradient compression is off.
    """
    if comm.get_world_size() == 1:
        return model
    on_cuda = device.startswith("cuda")
    ddp = DistributedDataParallel(
        model, device_ids=[comm.get_local_rank()] if on_cuda else None, **ddp_kwargs
    )
    if fp16_compression and on_cuda:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp


class AtomicCheckpointer(DetectionCheckpointer):
    """Writes each checkpoint with :func:`backbone.io.atomic_save` (a killed run never leaves a torn
    one) and reads every checkpoint with :func:`backbone.io.read_checkpoint` (reading never runs code).

    detectron2's own loader unpickles ``*.pkl`` files with plain ``pickle.load``, which executes
    whatever the file says; here a ``.pkl`` file is refused unless ``trust_pickle`` is set
    (``+train.trust_pickle=True`` on the command line) for a file the user trusts.
    """

    def __init__(
        self, model: nn.Module, save_dir: str = "", *, trust_pickle: bool = False, **checkpointables
    ):
        super().__init__(model, save_dir, **checkpointables)
        self.trust_pickle = trust_pickle
        if save_dir and self.save_to_disk:
            remove_stale_temporaries(save_dir)

    def _load_file(self, filename: str) -> dict:
        if filename.endswith((".pkl", ".pyth")):
            if not self.trust_pickle:
                raise CheckpointError(
                    f"{filename}: a .pkl/.pyth file is a plain Python pickle, and reading it can run "
                    "arbitrary code; convert it to a weights-only .pth file, or pass "
                    "+train.trust_pickle=True if you trust this file"
                )
            return super()._load_file(filename)
        loaded = read_checkpoint(filename, trust_pickle=self.trust_pickle)
        if not isinstance(loaded, dict):
            raise CheckpointError(f"{filename}: holds a {type(loaded).__name__}, not a checkpoint dict")
        return loaded if "model" in loaded else {"model": loaded}

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data["rng"] = capture_rng()  # for an exact resume (see resume_data_and_rng)
        data.update(kwargs)
        path = os.path.join(self.save_dir, f"{name}.pth")
        atomic_save(data, path)
        self.logger.info("Saved checkpoint to %s", path)
        self.tag_last_checkpoint(os.path.basename(path))


class _StartedLoader:
    """A data loader whose iterator is already running: the trainer continues it where it stands."""

    def __init__(self, iterator: Iterator) -> None:
        self.iterator = iterator

    def __iter__(self) -> Iterator:
        return self.iterator


def resume_data_and_rng(trainer, data_loader, batches_done: int, rng: dict | None) -> None:
    """Put the trainer's data stream and the RNGs where the interrupted run had them.

    detectron2's sampler is an infinite seeded stream (with aspect-ratio grouping on top), so the
    position is reached by drawing the ``batches_done`` batches the run had consumed (their images are
    read again: the price of an exact resume); then the RNG states saved with the checkpoint are put
    back, so drop path, RoI sampling and the next augmentations draw what they would have drawn.
    """
    iterator = iter(data_loader)
    for _ in range(batches_done):
        next(iterator)
    if rng is not None:
        restore_rng(rng)
    else:
        logger.warning(
            "the checkpoint has no RNG states: the resumed run will not equal an uninterrupted one"
        )
    trainer.reset_data_loader(lambda: _StartedLoader(iterator))


def load_weights(model: nn.Module, path: str) -> None:
    """Initialise from a detector checkpoint (ours or the released EVA-02 ones) or a pre-trained ViT.

    The ViT part goes through ``backbone.load_checkpoint`` (naming conversion, patch-kernel and
    position-embedding resizing); the rest of a detector checkpoint is loaded by name.
    """
    if not path:
        return
    base = model.module if isinstance(model, DistributedDataParallel) else model
    raw = read_state_dict(path)
    net_prefix = "backbone.net."
    net_sd = {k[len(net_prefix) :]: v for k, v in raw.items() if k.startswith(net_prefix)}
    if not net_sd:  # a backbone-only (pre-training) checkpoint
        load_checkpoint(base.backbone.net, raw, strict=False, source=path)
        return
    load_checkpoint(base.backbone.net, net_sd, strict=False, source=path)
    rest = {k: v for k, v in raw.items() if not k.startswith(net_prefix)}
    target = {k: v for k, v in base.state_dict().items() if not k.startswith(net_prefix)}
    usable = {k: v for k, v in rest.items() if k in target and v.shape == target[k].shape}
    skipped = sorted(set(rest) - set(usable))
    missing = sorted(set(target) - set(usable))
    if rest and not usable:
        raise CheckpointError(f"{path}: no detector head tensor matches this model")
    base.load_state_dict(usable, strict=False)
    if skipped:
        logger.warning(
            "%s: %d tensors not used (name or shape differ), e.g. %s", path, len(skipped), skipped[:5]
        )
    if missing:
        logger.warning("%s: %d model tensors not in the checkpoint, e.g. %s", path, len(missing), missing[:5])


def check_class_count(cfg, split: str = "train") -> None:
    """Refuse a model with fewer classes than ``dataloader.<split>``'s datasets have categories.

    Called once the data loader is built (the categories are read with the annotations), before
    any training step: otherwise the first step fails with ``IndexError: Target N is out of bounds``.
    """
    num_classes = cfg.model.get("roi_heads", {}).get("num_classes")
    dataset = cfg.dataloader.get(split, {}).get("dataset", {})
    names = dataset.get("names") if hasattr(dataset, "get") else None
    if num_classes is None or names is None:
        return
    for name in [names] if isinstance(names, str) else list(names):
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and len(classes) > int(num_classes):
            raise ValueError(
                f"model.roi_heads.num_classes={num_classes} but dataset '{name}' has {len(classes)} "
                f"categories ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}); set "
                f"model.roi_heads.num_classes={len(classes)}"
            )
        if classes is not None and len(classes) < int(num_classes):
            logger.warning(
                "model.roi_heads.num_classes=%s but dataset '%s' has %d categories: %d classes never trained",
                num_classes,
                name,
                len(classes),
                int(num_classes) - len(classes),
            )


def build_ema(cfg, device: str) -> ModelEMA | None:
    """An empty :class:`ModelEMA` when ``train.model_ema.enabled``: filled once the weights are loaded."""
    ema_cfg = cfg.train.get("model_ema", None)
    if not ema_cfg or not ema_cfg.get("enabled", False):
        return None
    ema_device = str(ema_cfg.get("device", device))
    if ema_device.startswith("cuda") and not torch.cuda.is_available():
        ema_device = "cpu"
    return ModelEMA(decay=float(ema_cfg.get("decay", 0.9999)), device=ema_device)


def do_test(cfg, model: nn.Module, ema: ModelEMA | None = None) -> dict:
    """Evaluate on ``dataloader.test`` with ``dataloader.evaluator``; EMA weights and TTA if configured.

    The one evaluation path: ``--eval-only``, the periodic evaluation during training and the
    test-dev submission tool (whose evaluator writes the result files) all run through here.
    """
    if cfg.dataloader.get("evaluator") is None:
        return {}
    aug = cfg.get("test", {}).get("aug", {})
    runner = tta_from_config(cfg, model) if aug.get("enabled", False) else model
    evaluator = instantiate(cfg.dataloader.evaluator)
    loader = instantiate(cfg.dataloader.test)
    runner = inference_autocast(cfg, runner, str(next(model.parameters()).device))
    with ema.apply_to(model) if ema is not None else contextlib.nullcontext():
        results = inference_on_dataset(runner, loader, evaluator)
    if comm.is_main_process() and results:
        print_csv_format(results)
    return results


def build_model(cfg) -> tuple[nn.Module, str]:
    device = resolve_device(cfg)
    model = instantiate(cfg.model)
    model.to(device)
    return model, device


def _read_ema_state(path: str) -> dict | None:
    """The ``ema_state`` entry of one of our training checkpoints, or None (with a warning)."""
    state = read_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("ema_state"), dict):
        return state["ema_state"]
    logger.warning("%s has no 'ema_state' (not saved by EMA training?): evaluating its model weights", path)
    return None


def do_eval_only(cfg) -> dict:
    model, device = build_model(cfg)
    ema_cfg = cfg.train.get("model_ema", {})
    path = cfg.train.init_checkpoint
    ema_state = None
    if ema_cfg.get("enabled", False) and ema_cfg.get("use_ema_weights_for_eval_only", False):
        ema_state = _read_ema_state(path)
    if ema_state is not None:
        model.load_state_dict(ema_state)
        logger.info("evaluating the EMA weights of %s", path)
    else:
        load_weights(model, path)
    model = create_ddp(model, device)
    model.eval()
    return do_test(cfg, model)


def do_train(cfg, resume: bool = False) -> dict:
    model, device = build_model(cfg)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    check_class_count(cfg, "train")
    ema = build_ema(cfg, device)

    ddp_model = create_ddp(model, device, **cfg.train.ddp)
    amp = cfg.train.amp.get("enabled", False)
    precision = _precision(cfg.train.amp, "train.amp") if amp else None
    if amp and device.startswith("cuda"):
        trainer = AMPTrainer(ddp_model, train_loader, optimizer, precision=precision)
    elif amp and precision == torch.bfloat16:
        trainer = SimpleTrainer(AutocastModel(ddp_model, "cpu", precision), train_loader, optimizer)
    else:
        if amp:
            logger.warning("train.amp float16 ignored on %s (fp16 needs a GPU; bfloat16 runs on CPU)", device)
        trainer = SimpleTrainer(ddp_model, train_loader, optimizer)
    extra = {"ema_state": ema} if ema is not None else {}
    checkpointer = AtomicCheckpointer(
        model,
        cfg.train.output_dir,
        trust_pickle=bool(cfg.train.get("trust_pickle", False)),
        trainer=trainer,
        **extra,
    )

    def test_fn() -> dict:
        return do_test(cfg, ddp_model, ema)

    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            EMAHook(ema, model) if ema is not None else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, test_fn),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period
            )
            if comm.is_main_process()
            else None,
        ]
    )
    if resume and checkpointer.has_checkpoint():
        # Model, optimizer, scheduler, iteration and (when saved) the EMA; the checkpoint records
        # the iteration that just finished.
        leftover = checkpointer.resume_or_load("", resume=True)
        start_iter = trainer.iter + 1
        resume_data_and_rng(trainer, train_loader, start_iter, leftover.get("rng"))
        if ema is not None and not ema.initialized:
            logger.warning("the checkpoint has no 'ema_state': the EMA starts from its model weights")
    else:
        load_weights(model, cfg.train.init_checkpoint)
        start_iter = 0
    if ema is not None and not ema.initialized:
        # As released: the average starts from the loaded weights, not from the random init.
        ema.reset(model)
    # train.stop_after=N (optional): leave after N iterations with a checkpoint, as before a job's time
    # limit, and continue later with --resume; the schedule stays that of train.max_iter.
    stop = min(int(cfg.train.get("stop_after", None) or cfg.train.max_iter), cfg.train.max_iter)
    trainer.train(start_iter, stop)
    return trainer.storage.latest() if hasattr(trainer, "storage") else {}
