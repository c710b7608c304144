#!/usr/bin/env python
"""Detection speed and memory: EVA-02 backbone versus detectron2's ViTDet ViT in the same detector.

    python tools/benchmark.py det [--cases tiny,base] [--iters 3] [--infer-images 3] [--memory] [--amp]
    python tools/benchmark.py det --square-pad [--cases tiny,base] [--infer-images 5]

* ``tiny``: the toy config (256 px); ``base``: the COCO EVA-02 B 1024 px config. For each, the
  same Cascade Mask R-CNN runs with the EVA-02 ViT and with ``detectron2.modeling.ViT`` of the
  same width, depth, heads, window size and global blocks (ViTDet: GELU MLP x4, relative
  position bias), reporting training iterations/s and inference s/image.
* ``--memory``: peak memory of one ``eva02_large`` 1024 px training step with and without
  activation checkpointing (each in a fresh process; CPU: peak RSS growth, GPU: peak allocated).
* ``--amp``: on a GPU, training throughput in fp16 and bf16 autocast as well.
* ``--backbone-only``: forward + backward of the two backbones alone (no detector heads, whose cost
  follows each random model's proposals and dominates at toy size).
* ``--square-pad``: inference s/image of the EVA-02 detector on a non-square (3:2) image with the
  released square padding (``model.backbone.square_pad = img_size``) and without it (0: padded to
  a multiple of 64 only); same weights, runs interleaved, best of ``--infer-images``.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.data.datasets import load_coco_json
from detectron2.modeling import ViT
from detectron2.utils.events import EventStorage
from torch import nn

import det  # noqa: F401  (registers datasets, applies compatibility shims)
import toydata
from bench.timing import add_common_arguments, apply_threads, best_interleaved, seconds_per_call

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "tiny": (ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py", 256),
    "base": (ROOT / "configs/det/coco/eva02_coco_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7.py", 1024),
    "large": (ROOT / "configs/det/coco/eva02_coco_cascade_mask_rcnn_vitdet_l_4attn_1024_lrd0p8.py", 1024),
    "large_1536": (
        ROOT / "configs/det/coco/eva02_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8.py",
        1536,
    ),
}


def _batch(size: int, n: int, workdir: Path) -> list[dict]:
    toydata.generate(workdir, num_train=n, num_val=1, num_test=1, size=size, max_objects=4, seed=9)
    dicts = load_coco_json(
        str(workdir / "toy_coco/annotations/instances_train.json"),
        str(workdir / "toy_coco/train"),
        dataset_name="benchmark_toy",
    )  # maps category ids to contiguous classes
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB", use_instance_mask=True)
    return [mapper(copy.deepcopy(d)) for d in dicts]


def _vitdet_like(net_cfg) -> object:
    """detectron2's ViTDet backbone with the geometry of our EVA-02 net config."""
    return L(ViT)(
        img_size=net_cfg.img_size,
        patch_size=net_cfg.patch_size,
        embed_dim=net_cfg.embed_dim,
        depth=net_cfg.depth,
        num_heads=net_cfg.num_heads,
        drop_path_rate=net_cfg.drop_path_rate,
        window_size=net_cfg.window_size,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        window_block_indexes=list(net_cfg.window_block_indexes),
        residual_block_indexes=[],
        use_rel_pos=True,
        use_act_checkpoint=net_cfg.use_act_checkpoint,
        out_feature="last_feat",
    )


def _model(case: str, backbone: str, device: str, act_ckpt: bool = False):
    cfg = LazyConfig.load(str(CASES[case][0]))
    cfg.model.backbone.net.use_act_checkpoint = act_ckpt
    cfg.model.backbone.net.drop_path_rate = 0.0
    if backbone == "vitdet":
        cfg.model.backbone.net = _vitdet_like(cfg.model.backbone.net)
    model = instantiate(cfg.model).to(device)
    cfg.optimizer.params.model = model
    return model, instantiate(cfg.optimizer)


def _to(batch, device):
    out = []
    for d in batch:
        d = dict(d)
        d["instances"] = d["instances"].to(device)
        out.append(d)
    return out


def train_speed(model, optimizer, batch, iters: int, device: str, amp: torch.dtype | None = None) -> float:
    """Training iterations per second (one warm-up iteration first)."""
    model.train()
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    def step() -> None:
        with torch.autocast(device_type=device.split(":")[0], dtype=amp, enabled=amp is not None):
            loss = sum(model(_to(batch, device)).values())
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    with EventStorage(0):
        return 1.0 / seconds_per_call(step, iters)


@torch.no_grad()
def infer_speed(model, batch, images: int, device: str) -> float:
    model.eval()
    d = batch[0]
    inp = {"image": d["image"].to(device), "height": d["image"].shape[1], "width": d["image"].shape[2]}
    return seconds_per_call(lambda: model([inp]), images)


def backbone_speed(case: str, device: str, batch: int, iters: int) -> None:
    """Seconds per forward + backward of each backbone alone, interleaved, best of ``iters``."""
    cfg = LazyConfig.load(str(CASES[case][0]))
    cfg.model.backbone.net.drop_path_rate = 0.0
    nets = {
        "eva02": instantiate(cfg.model.backbone.net).to(device).train(),
        "vitdet": instantiate(_vitdet_like(cfg.model.backbone.net)).to(device).train(),
    }
    x = torch.randn(batch, 3, CASES[case][1], CASES[case][1], device=device)
    steps = {name: partial(_forward_backward, net, x) for name, net in nets.items()}
    best = best_interleaved(steps, iters)
    row = {
        "case": case,
        "device": device,
        "batch": batch,
        **{f"{k}_fwd_bwd_ms": round(v * 1e3, 1) for k, v in best.items()},
    }
    print(json.dumps(row), flush=True)
    print(f"{case}: EVA-02 / ViTDet backbone time ratio {best['eva02'] / best['vitdet']:.3f}", flush=True)


def _forward_backward(net: nn.Module, x: torch.Tensor) -> None:
    net(x)["last_feat"].square().mean().backward()


@torch.no_grad()
def square_pad_speed(case: str, device: str, images: int) -> None:
    """Best-of-``images`` s/image with ``square_pad = img_size`` and 0, on a 3:2 image of width img_size."""
    size = CASES[case][1]
    height = size * 2 // 3 // 64 * 64  # a multiple of 64: without square padding nothing is padded
    with tempfile.TemporaryDirectory() as tmp:
        toydata.generate(Path(tmp), 1, 1, 1, size=size, max_objects=4, seed=9, height=height)
        dicts = load_coco_json(
            str(Path(tmp) / "toy_coco/annotations/instances_val.json"), str(Path(tmp) / "toy_coco/val")
        )
        d = DatasetMapper(is_train=False, augmentations=[], image_format="RGB")(copy.deepcopy(dicts[0]))
    inp = {"image": d["image"].to(device), "height": height, "width": size}
    cfg = LazyConfig.load(str(CASES[case][0]))
    cfg.model.backbone.net.drop_path_rate = 0.0
    models = {}
    for pad in (size, 0):
        cfg.model.backbone.square_pad = pad
        torch.manual_seed(0)  # same weights: only the padding differs
        models[pad] = instantiate(cfg.model).to(device).eval()
    best = best_interleaved({pad: partial(model, [inp]) for pad, model in models.items()}, images)
    row = {
        "case": case,
        "device": device,
        "image_hw": [height, size],
        "threads": torch.get_num_threads(),
        **{f"infer_s_per_image_square_pad_{pad}": round(v, 4) for pad, v in best.items()},
    }
    print(json.dumps(row), flush=True)
    print(
        f"{case}: square_pad={size} / square_pad=0 inference time ratio {best[size] / best[0]:.3f}",
        flush=True,
    )


def memory_step(case: str, act_ckpt: bool, device: str) -> dict:
    """One training step in this process; peak memory of the step."""
    with tempfile.TemporaryDirectory() as tmp:
        batch = _batch(CASES[case][1], 1, Path(tmp))
    model, optimizer = _model(case, "eva02", device, act_ckpt)
    model.train()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with EventStorage(0):
        loss = sum(model(_to(batch, device)).values())
        loss.backward()
        optimizer.step()
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20  # kB -> GiB
    return {"case": case, "act_checkpoint": act_ckpt, "device": device, "peak_GiB": round(peak, 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="tiny,base")
    p.add_argument("--infer-images", type=int, default=3)
    p.add_argument("--memory", action="store_true")
    p.add_argument("--amp", action="store_true")
    add_common_arguments(p, batch_size=2, iters=3)
    p.add_argument("--backbone-only", action="store_true")
    p.add_argument("--square-pad", action="store_true", help="inference with and without square padding")
    p.add_argument("--memory-step", default=None, help=argparse.SUPPRESS)  # internal: "case,act_ckpt"
    args = p.parse_args(argv)
    apply_threads(args.threads)
    if args.memory_step:
        case, ckpt = args.memory_step.split(",")
        print(json.dumps(memory_step(case, ckpt == "1", args.device)))
        return
    if args.square_pad:
        for case in args.cases.split(","):
            square_pad_speed(case, args.device, args.infer_images)
        return
    if args.backbone_only:
        for case in args.cases.split(","):
            backbone_speed(case, args.device, args.batch_size, args.iters)
        return
    rows = []
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            batch = _batch(CASES[case][1], args.batch_size, Path(tmp))
        for backbone in ("eva02", "vitdet"):
            torch.manual_seed(0)
            model, optimizer = _model(case, backbone, args.device)
            row = {
                "case": case,
                "backbone": backbone,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "train_it_per_s": round(train_speed(model, optimizer, batch, args.iters, args.device), 4),
                "infer_s_per_image": round(infer_speed(model, batch, args.infer_images, args.device), 3),
            }
            if args.amp and args.device.startswith("cuda"):
                for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                    row[f"train_it_per_s_{name}"] = round(
                        train_speed(model, optimizer, batch, args.iters, args.device, dtype), 3
                    )
            rows.append(row)
            print(json.dumps(row), flush=True)
            del model, optimizer
        eva, vit = rows[-2], rows[-1]
        train_ratio = vit["train_it_per_s"] / eva["train_it_per_s"]
        print(
            f"{case}: EVA-02 / ViTDet training time ratio {train_ratio:.3f}, "
            f"inference time ratio {eva['infer_s_per_image'] / vit['infer_s_per_image']:.3f}",
            flush=True,
        )
    if args.memory:
        for ckpt in ("0", "1"):
            cmd = [
                sys.executable,
                "-m",
                "bench.det",
                "--memory-step",
                f"large,{ckpt}",
                "--device",
                args.device,
            ]
            out = (
                subprocess.run(cmd, capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            print(out, flush=True)


if __name__ == "__main__":
    main()
