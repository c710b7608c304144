"""What tools/seg_train.py and tools/seg_test.py share: runner arguments, config loading, CPU/DDP fixes."""

from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp
from collections.abc import Callable

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from backbone.io import remove_stale_temporaries
from backbone.overrides import OverrideError, checked_options, locate_target


def init_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Start a gloo process group for ``--launcher pytorch`` on a machine without CUDA.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally, and its runner
    wraps the model with ``device_ids=[LOCAL_RANK]``, which torch rejects for CPU modules. We
    initialise the group here (the runner then skips its own ``init_dist``) and use the
    ``DeviceAwareDDP`` wrapper. With CUDA nothing changes.
    """
    if launcher == "none" or torch.cuda.is_available():
        return
    if launcher != "pytorch":
        raise RuntimeError(
            f"--launcher {launcher} without CUDA is not supported; use --launcher pytorch (torchrun)"
        )
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise RuntimeError(f"--launcher pytorch needs the torchrun environment; missing {missing}")
    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    if not dist.is_initialized():
        timeout = cfg.env_cfg.dist_cfg.get("timeout")
        kwargs = {} if timeout is None else {"timeout": datetime.timedelta(seconds=timeout)}
        dist.init_process_group(backend="gloo", **kwargs)
    if cfg.get("model_wrapper_cfg") is None:
        cfg.model_wrapper_cfg = dict(
            type="DeviceAwareDDP",
            broadcast_buffers=False,
            find_unused_parameters=cfg.get("find_unused_parameters", False),
        )


def cpu_fallback_optim(cfg: Config) -> None:
    """Where a config asks for ``AmpOptimWrapper`` but there is no GPU: bf16 keeps autocast on CPU
    (``CPUAutocastOptimWrapper``), fp16 (the released recipes) falls back to fp32 ``OptimWrapper``.

    mmengine's ``AmpOptimWrapper`` refuses to start without CUDA/NPU/MLU; the released recipes
    train in fp16, so their configs keep ``AmpOptimWrapper`` for GPUs.
    """
    optim = cfg.get("optim_wrapper")
    if optim is None or torch.cuda.is_available() or optim.get("type") != "AmpOptimWrapper":
        return
    dtype = str(optim.get("dtype", "float16")).replace("torch.", "")
    for key in ("loss_scale", "dtype", "use_fsdp"):
        optim.pop(key, None)
    if dtype == "bfloat16":
        print_log("no CUDA device: AmpOptimWrapper(bfloat16) -> CPUAutocastOptimWrapper", logger="current")
        optim["type"], optim["dtype"] = "CPUAutocastOptimWrapper", dtype
        return
    print_log("no CUDA device: AmpOptimWrapper replaced by OptimWrapper (fp32 on CPU)", logger="current")
    optim["type"] = "OptimWrapper"


def is_tta_config(cfg: Config) -> bool:
    """True for evaluation configs whose model is already the test-time-augmentation wrapper."""
    return cfg.get("model", {}).get("type") == "SegTTAModel"


def prepare_determinism(cfg: Config) -> None:
    """Before the runner: deterministic cuBLAS matmuls need a fixed workspace (set before CUDA starts)."""
    if cfg.get("randomness", {}).get("deterministic", False) and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def relax_determinism() -> None:
    """After the runner: mmengine's ``deterministic=True`` calls ``use_deterministic_algorithms(True)``,
    which fails on CUDA kernels without a deterministic version (bilinear upsampling backward). The
    released runs only fixed cuDNN's choices; keep deterministic kernels where they exist, warn elsewhere.
    """
    if torch.are_deterministic_algorithms_enabled() and torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, ``--launcher`` and ``--local-rank``, as mmsegmentation's tools take them."""
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        help="override settings of the config, key=value (xxx=yyy format); the key must exist "
        "(write +key=value to add a new one)",
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)


def parse_runner_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def registered_type(target: object) -> object:
    """The class or function an mmengine ``type`` names (mmseg's registries, then mmengine's)."""
    if callable(target) or not isinstance(target, str):
        return locate_target(target)
    from mmseg import registry
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    for name in dir(registry):
        table = getattr(registry, name)
        if name.isupper() and hasattr(table, "get"):
            found = table.get(target)
            if found is not None:
                return found
    return locate_target(target)


def load_config(args: argparse.Namespace, check: Callable[[Config], None] | None = None) -> Config:
    """``args.config`` with ``--launcher``, ``--cfg-options`` and the work dir (``--work-dir``, the
    config's, or ``./work_dirs/<config name>``) applied; ``check`` sees the file as loaded."""
    cfg = Config.fromfile(args.config)
    if check is not None:
        check(cfg)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        # mmengine creates keys that do not exist: refuse a typo (+key=value adds one on purpose).
        try:
            options = checked_options(cfg, args.cfg_options, registered_type)
        except OverrideError as err:  # one line from the tools, not a traceback
            raise SystemExit(f"error: {err}") from None
        cfg.merge_from_dict(options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir", None) is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(args.config))[0])
    return cfg


def _datasets(node: object) -> list:
    """The dataset configs of a loader's ``dataset``, through wrappers (``RepeatDataset`` and the like)."""
    if not hasattr(node, "get"):
        return []
    found = [node] if "data_root" in node or "data_prefix" in node else []
    inner = node.get("dataset")
    inner = inner if isinstance(inner, (list, tuple)) else [inner]
    return found + [d for item in inner for d in _datasets(item)]


def _has_file(folder: str, suffix: str) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(name.endswith(suffix) for name in files):
            return True
    return False


def check_data(cfg: Config, what: str) -> None:
    """Before the runner builds anything: every image folder the run reads exists and holds images,
    and the model has a class slot for each of the dataset's classes. Otherwise mmengine ends in
    ``need at least one array to concatenate`` or ``Target N is out of bounds`` far into the run."""
    splits = ("train", "val") if what == "train" else ("test",)
    heads = {
        name: head.get("num_classes")
        for name in ("decode_head", "auxiliary_head")
        if hasattr(head := cfg.get("model", {}).get(name), "get")
    }
    for split in splits:
        loader = cfg.get(f"{split}_dataloader")
        if not hasattr(loader, "get") or (split == "val" and cfg.get("val_cfg") is None):
            continue
        for dataset in _datasets(loader.get("dataset")):
            img_path = (dataset.get("data_prefix") or {}).get("img_path", "")
            folder = osp.join(dataset.get("data_root") or "", img_path)
            suffix = dataset.get("img_suffix", ".jpg")
            key = f"{split}_dataloader.dataset.data_root"
            if not osp.isdir(folder):
                raise SystemExit(
                    f"error: image folder {folder} ({key} + data_prefix.img_path) does not exist"
                )
            if not _has_file(folder, suffix):
                raise SystemExit(f"error: image folder {folder} ({key}) holds no *{suffix} images")
            classes = (dataset.get("metainfo") or {}).get("classes")
            if classes is None:
                dataset_class = registered_type(dataset.get("type"))
                classes = getattr(dataset_class, "METAINFO", {}).get("classes")
            for head, num_classes in heads.items():
                if classes is not None and num_classes is not None and len(classes) > int(num_classes):
                    raise SystemExit(
                        f"error: model.{head}.num_classes={num_classes} but the {split} dataset has "
                        f"{len(classes)} classes ({', '.join(map(str, classes[:5]))}, ...); set "
                        f"model.{head}.num_classes={len(classes)}"
                    )


def run(cfg: Config, what: str) -> None:
    """Build the runner (the config's ``runner_type`` if any) and call ``train`` or ``test``."""
    check_data(cfg, what)
    if what == "train" and not any(h.get("type") == "RNGStateHook" for h in cfg.get("custom_hooks") or []):
        cfg.custom_hooks = [*(cfg.get("custom_hooks") or []), dict(type="RNGStateHook")]  # exact resume
    init_cpu_distributed(cfg, cfg.launcher)
    if what == "train" and int(os.environ.get("RANK", "0")) == 0:
        remove_stale_temporaries(cfg.work_dir)  # interrupted checkpoint writes of a killed run
    prepare_determinism(cfg)
    runner = Runner.from_cfg(cfg) if "runner_type" not in cfg else RUNNERS.build(cfg)
    relax_determinism()
    getattr(runner, what)()
