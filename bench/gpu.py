"""The GPU figures in one run, side by side, with the targets next to them.

    python tools/benchmark.py gpu [--iters 5] [--infer-images 5] [--out output/benchmark_gpu.json]
    python tools/benchmark.py gpu --reduced          # CPU smoke run (the default without a GPU)

Rows:

* **bf16 matmul peak**: best of ``--iters`` square bf16 matmuls (8192^3; reduced: 256^3), timed
  interleaved with the backbone steps below.
* **backbone fwd+bwd, bf16**: ``eva02_base`` at the detection geometry (1024 px, patch 16, window 16,
  global blocks 2/5/8/11; :data:`bench.backbone.DET_GEOMETRY`) under bf16 autocast with the flash
  SDPA kernel, next to detectron2's ``ViT`` of the same size (GELU MLP x4, relative position bias, its
  own attention). MFU = FLOPs counted by :mod:`bench.flops` (attention included, 2 per multiply-add)
  per second, over the bf16 matmul peak of the same run.
* **Cascade Mask R-CNN B at 1024** (the COCO EVA-02 B config of ``configs/det/``), for our EVA-02
  and for ``detectron2.modeling.ViT`` in the same detector (:mod:`bench.det` builds the pair):
  training s/img (forward, backward, AdamW step; bf16 autocast), inference s/img (bf16 autocast)
  and peak memory of training (GPU: ``torch.cuda.max_memory_allocated``, as detectron2 logs it;
  CPU: growth of the process's peak resident memory over the step).
* **eva02_large at 1536** (the COCO EVA-02 L 1536 config) one training step with activation
  checkpointing: s/img and peak memory.

Each detector runs in a fresh process, so that one's memory does not hide in another's peak.
``--reduced`` (automatic on CPU unless ``--full``) runs the same code paths on small models:
``eva02_tiny`` on a 64 px grid with one window block and one global block, the toy detector (256 px)
for both detector rows, one timed iteration. Its figures are a smoke test, not GPU figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
from detectron2.config import instantiate

from backbone import build_backbone
from backbone.io import atomic_write_text
from bench.backbone import DET_GEOMETRY
from bench.det import CASES, ROOT, _batch, _model, _vitdet_like, infer_speed, train_speed
from bench.flops import count_flops
from bench.timing import apply_threads, best_interleaved

# Targets on an H100/H200 (issue 15) and detectron2's published ViTDet-B Cascade Mask R-CNN figures
# (1024 px, A100: training s/img, inference s/img, training memory).
TARGETS = {"train_s_per_img": 0.15, "infer_s_per_img": 0.04, "peak_mem_GB": 12.3}
VITDET_B_A100 = {"train_s_per_img": 0.362, "infer_s_per_img": 0.089, "peak_mem_GB": 12.3}

FULL = dict(
    matmul_n=8192,
    backbone=("eva02_base", DET_GEOMETRY),
    backbone_batch=2,
    det_case="base",
    large_case="large_1536",
)
# Reduced: the same code paths at toy size. A 4 x 4 patch grid, one block with 2 x 2 windows and
# one global block (no padding: the FLOP count stays a clean hand count).
REDUCED_GEOMETRY = dict(
    img_size=64,
    patch_size=16,
    pretrain_img_size=64,
    use_cls_token=False,
    window_size=2,
    window_block_indexes=(0,),
    depth=2,
)
REDUCED = dict(
    matmul_n=256,
    backbone=("eva02_tiny", REDUCED_GEOMETRY),
    backbone_batch=1,
    det_case="tiny",
    large_case="tiny",
)


PRECISIONS = {"bf16": torch.bfloat16, "fp32": None}


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return partial(torch.autocast, device.type, dtype=dtype, enabled=dtype is not None)


def _flash(x: torch.Tensor, dtype: torch.dtype | None):
    """The flash SDPA kernel only (CUDA, half precision), so that a silent fallback to another
    kernel cannot happen; on CPU the flash kernel is the only fused one and is chosen anyway."""
    if x.is_cuda and dtype in (torch.bfloat16, torch.float16):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    return contextlib.nullcontext()


def _step(net: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> None:
    net.zero_grad(set_to_none=True)
    with _autocast(x.device, dtype)(), _flash(x, dtype):
        out = net(x)["last_feat"]
    out.float().square().mean().backward()


def backbone_rows(mode: dict, device: torch.device, iters: int, dtype: torch.dtype | None) -> dict:
    """Matmul peak and the fwd+bwd MFU of our backbone and detectron2's ViT, timed interleaved.

    The matmul runs in the autocast dtype (bf16; fp32 when autocast is off)."""
    name, geometry = mode["backbone"]
    torch.manual_seed(0)
    ours = build_backbone(name, **geometry).to(device).train()
    # detectron2's ViT with our geometry (bench.det's pairing reads these attributes)
    net_cfg = SimpleNamespace(
        img_size=ours.img_size[0],
        patch_size=ours.patch_size,
        embed_dim=ours.embed_dim,
        depth=ours.depth,
        num_heads=ours.num_heads,
        drop_path_rate=0.0,
        window_size=geometry["window_size"],
        window_block_indexes=geometry["window_block_indexes"],
        use_act_checkpoint=False,
    )
    vitdet = instantiate(_vitdet_like(net_cfg)).to(device).train()
    side = ours.img_size[0]
    x = torch.randn(mode["backbone_batch"], 3, side, side, device=device)
    n = mode["matmul_n"]
    a, b = (torch.randn(n, n, device=device, dtype=dtype or torch.float32) for _ in range(2))
    steps = {"eva02": partial(_step, ours, x, dtype), "vitdet": partial(_step, vitdet, x, dtype)}
    flops = {k: count_flops(fn) for k, fn in steps.items()}
    best = best_interleaved({**steps, "matmul": lambda: a @ b}, iters)
    peak = 2 * n**3 / best["matmul"]
    rows = {"matmul_TFLOPs": peak / 1e12, "matmul_n": n}
    for key in steps:
        rows[f"backbone_{key}"] = {
            "fwd_bwd_s": best[key],
            "flops": flops[key],
            "GFLOP": flops[key] / 1e9,
            "TFLOPs": flops[key] / best[key] / 1e12,
            "mfu": flops[key] / best[key] / peak,
            "batch": mode["backbone_batch"],
            "preset": name,
            "img_size": side,
        }
    return rows


def detector_row(case: str, backbone: str, device: str, act_ckpt: bool, iters: int, infer_images: int,
                 batch_size: int, dtype: torch.dtype | None) -> dict:  # fmt: skip
    """One detector in this process: training s/img and peak memory, then inference s/img, under
    autocast to ``dtype`` (None: fp32)."""
    from det.engine import AutocastModel

    with tempfile.TemporaryDirectory() as tmp:
        batch = _batch(CASES[case][1], batch_size, Path(tmp))
    torch.manual_seed(0)
    model, optimizer = _model(case, backbone, device, act_ckpt)
    on_cuda = device.startswith("cuda")
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    it_s = train_speed(model, optimizer, batch, iters, device, dtype)
    if on_cuda:
        peak_gb = torch.cuda.max_memory_allocated() / 1e9
    else:  # kB -> GB; the first step's activations, gradients and optimizer state lie above the start
        peak_gb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024 / 1e9
    row = {
        "case": case,
        "config": str(CASES[case][0].relative_to(ROOT)),
        "size": CASES[case][1],
        "backbone": backbone,
        "act_checkpoint": act_ckpt,
        "batch": batch_size,
        "train_s_per_img": 1.0 / it_s / batch_size,
        "peak_mem_GB": peak_gb,
    }
    if infer_images:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        wrapped = model if dtype is None else AutocastModel(model, device.split(":")[0], dtype, True)
        wrapped.eval()
        row["infer_s_per_img"] = infer_speed(wrapped, batch, infer_images, device)
    return row


def _detector_in_subprocess(args: argparse.Namespace, case: str, backbone: str, act_ckpt: bool,
                            infer: bool) -> dict:  # fmt: skip
    cmd = [
        sys.executable, "-m", "bench.gpu", "--detector", f"{case},{backbone},{int(act_ckpt)}",
        "--device", args.device, "--iters", str(args.iters), "--batch-size", str(args.batch_size),
        "--infer-images", str(args.infer_images if infer else 0), "--threads", str(args.threads),
        "--precision", args.precision,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _backbone_cell(row: dict) -> str:
    return (
        f"{row['fwd_bwd_s'] * 1e3:.1f} ms, {row['GFLOP']:.4g} GFLOP, {row['TFLOPs']:.3g} TFLOP/s, "
        f"MFU {100 * row['mfu']:.1f}%"
    )


def table(result: dict) -> str:
    """The side-by-side table (Markdown)."""
    o, v = result["backbone_eva02"], result["backbone_vitdet"]
    prec = result["precision"]
    det = {r["backbone"]: r for r in result["cascade"]}
    large = result["large_act_ckpt"]
    ours_det, vit_det = det["eva02"], det["vitdet"]
    title = f"{result['device_name']}, torch {result['torch']}" + (
        " — REDUCED smoke run (toy sizes), not GPU figures" if result["reduced"] else ""
    )
    lines = [
        f"**{title}**",
        "",
        "| measurement | EVA-02 (ours) | detectron2 ViTDet ViT | target H100/H200 "
        "| ViTDet-B published (A100) |",
        "|---|---|---|---|---|",
        f"| {prec} matmul peak ({result['matmul_n']}^3) | {result['matmul_TFLOPs']:.3g} TFLOP/s | | | |",
        f"| backbone fwd+bwd {prec}, {o['preset']} batch {o['batch']} at {o['img_size']} px "
        f"(detection geometry{', reduced' if result['reduced'] else ''}) | {_backbone_cell(o)} "
        f"| {_backbone_cell(v)} | | |",
    ]
    size = ours_det["size"]
    lines += [
        f"| Cascade Mask R-CNN {size} px training s/img ({prec}, batch {ours_det['batch']}) "
        f"| {_fmt(ours_det['train_s_per_img'])} | {_fmt(vit_det['train_s_per_img'])} "
        f"| <= {TARGETS['train_s_per_img']} | {VITDET_B_A100['train_s_per_img']} |",
        f"| Cascade Mask R-CNN {size} px inference s/img ({prec}) | {_fmt(ours_det['infer_s_per_img'])} "
        f"| {_fmt(vit_det['infer_s_per_img'])} | <= {TARGETS['infer_s_per_img']} "
        f"| {VITDET_B_A100['infer_s_per_img']} |",
        f"| Cascade Mask R-CNN {size} px training peak memory GB | {_fmt(ours_det['peak_mem_GB'], 2)} "
        f"| {_fmt(vit_det['peak_mem_GB'], 2)} | <= {TARGETS['peak_mem_GB']} "
        f"| {VITDET_B_A100['peak_mem_GB']} |",
        f"| {large['config'].split('/')[-1]} ({large['size']} px) training s/img, activation checkpointing "
        f"| {_fmt(large['train_s_per_img'])} | | | |",
        f"| same, training peak memory GB | {_fmt(large['peak_mem_GB'], 2)} | | | |",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    reduced = args.reduced or (device.type == "cpu" and not args.full)
    if args.precision is None:  # CPUs without bf16 units emulate it ~8x slower than fp32
        args.precision = "fp32" if reduced and device.type == "cpu" else "bf16"
    dtype = PRECISIONS[args.precision]
    mode = REDUCED if reduced else FULL
    iters = 1 if reduced and not args.iters_given else args.iters
    args.iters = iters
    if reduced and not args.infer_given:
        args.infer_images = 1
    result = {
        "reduced": reduced,
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads)"
        ),
        "torch": torch.__version__,
        "precision": args.precision,
        "targets": TARGETS,
        "vitdet_b_a100_published": VITDET_B_A100,
    }
    result.update(backbone_rows(mode, device, iters, dtype))
    result["cascade"] = [
        _detector_in_subprocess(args, mode["det_case"], backbone, False, infer=True)
        for backbone in ("eva02", "vitdet")
    ]
    result["large_act_ckpt"] = _detector_in_subprocess(args, mode["large_case"], "eva02", True, infer=False)
    bad = _non_finite(result)
    if bad:
        raise RuntimeError(f"non-finite or non-positive figure {bad}")
    return result


def _non_finite(obj, prefix: str = "") -> str | None:
    """The key of the first figure that is not a finite positive number (booleans and names skipped)."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        ok = isinstance(obj, (bool, str)) or (math.isfinite(obj) and obj > 0)
        return None if ok else prefix
    for key, value in items:
        found = _non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if found:
            return found
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 5; reduced: 1)")
    p.add_argument("--infer-images", type=int, default=None, help="timed inference images (default 5)")
    p.add_argument("--batch-size", type=int, default=1, help="detector training images per step")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--reduced", action="store_true", help="toy sizes, one iteration (default on CPU)")
    p.add_argument("--full", action="store_true", help="full sizes even on CPU")
    p.add_argument(
        "--precision", choices=sorted(PRECISIONS), default=None,
        help="autocast dtype (default bf16; fp32 for the reduced run on CPU)",
    )  # fmt: skip
    p.add_argument("--out", default="output/benchmark_gpu.json", help="JSON of every figure")
    p.add_argument("--detector", help=argparse.SUPPRESS)  # internal: "case,backbone,act_ckpt"
    args = p.parse_args(argv)
    args.iters_given, args.infer_given = args.iters is not None, args.infer_images is not None
    args.iters = 5 if args.iters is None else args.iters
    args.infer_images = 5 if args.infer_images is None else args.infer_images
    apply_threads(args.threads)
    if args.detector:
        case, backbone, ckpt = args.detector.split(",")
        row = detector_row(case, backbone, args.device, ckpt == "1", args.iters, args.infer_images,
                           args.batch_size, PRECISIONS[args.precision or "bf16"])  # fmt: skip
        print(json.dumps(row))
        return
    result = run(args)
    text = table(result)
    print(text)
    if args.out:
        atomic_write_text(args.out, json.dumps({**result, "table": text}, indent=1) + "\n")
        print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
