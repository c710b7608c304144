"""Backbone speed: ours against timm's Eva on the same weights, and against a large matmul.

    python tools/benchmark.py [backbone]         # fp32 on CPU, the README figures
    python tools/benchmark.py --device cuda      # adds bf16 autocast on a GPU
    python tools/benchmark.py --compile          # adds a row with both models under torch.compile

Every figure comes from one run, interleaving the models so that machine load
affects them alike. FLOPs are counted by :mod:`bench.flops` (torch's counter plus the CPU
attention kernel, 2 per multiply-add) on our model.
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import timm
import torch

from backbone import build_backbone, load_checkpoint
from bench.flops import flop_counter
from bench.timing import add_common_arguments, apply_threads, best_interleaved

DET_GEOMETRY = dict(
    img_size=1024,
    patch_size=16,
    pretrain_img_size=224,
    use_cls_token=False,
    window_size=16,
    window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10),
)


def count_flops(fn, x) -> int:
    counter = flop_counter()
    with counter, torch.inference_mode():
        fn(x)
    return counter.get_total_flops()


def best_time(fns: dict, x, repeats: int, autocast) -> dict[str, float]:
    """Best-of-``repeats`` seconds per call for each function on ``x``, calls interleaved."""
    with torch.inference_mode(), autocast():
        return best_interleaved({name: functools.partial(fn, x) for name, fn in fns.items()}, repeats)


def matmul(device: torch.device, dtype: torch.dtype, n: int = 4096):
    """A large square matmul, the reference for achievable FLOP/s; returns (fn, flops)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda _: a @ b), 2 * n**3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, batch_size=8, iters=5, device="cpu")
    parser.add_argument(
        "--compile", action="store_true", help="also time timm, ours and det under torch.compile (inductor)"
    )
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    device = torch.device(args.device)
    modes = [("fp32", torch.float32, contextlib.nullcontext)]
    if device.type == "cuda":
        modes.append(("bf16", torch.bfloat16, lambda: torch.autocast("cuda", dtype=torch.bfloat16)))

    torch.manual_seed(0)
    ref = timm.create_model("eva02_base_patch14_224", pretrained=False, num_classes=0).eval().to(device)
    ours = build_backbone("eva02_base").eval()
    load_checkpoint(ours, ref.state_dict())
    ours.to(device)
    det = build_backbone("eva02_base", **DET_GEOMETRY).eval().to(device)
    x224 = torch.randn(args.batch_size, 3, 224, 224, device=device)
    x1024 = torch.randn(1, 3, 1024, 1024, device=device)
    flops224 = count_flops(ours.forward_tokens, x224)
    flops_det = count_flops(det, x1024)

    threads = torch.get_num_threads()
    print(f"device: {device} ({threads} threads), torch {torch.__version__}, timm {timm.__version__}")
    print(
        "| precision | matmul 4096^3 | timm eva02_base 224 | ours 224 | ours / timm | ours % of matmul "
        "| ours det 1024 (win 16, 4 global) | det % of matmul |"
    )
    print("|---|---|---|---|---|---|---|---|")
    variants = [("", ref.forward_features, ours.forward_tokens, det)]
    if args.compile:
        variants.append(
            (" + torch.compile", torch.compile(ref.forward_features), torch.compile(ours.forward_tokens),
             torch.compile(det))
        )  # fmt: skip
    for label, dtype, autocast in modes:
        mm_fn, mm_flops = matmul(device, dtype)
        for suffix, timm_fn, ours_fn, det_fn in variants:
            # the matmul is timed inside the same interleaved loops, so load affects it alike
            t = best_time({"timm": timm_fn, "ours": ours_fn, "mm": mm_fn}, x224, args.iters, autocast)
            t_det = best_time({"det": det_fn, "mm": mm_fn}, x1024, max(2, args.iters // 2), autocast)
            peak = mm_flops / min(t["mm"], t_det["mm"])
            t_det = t_det["det"]
            ours_fps, det_fps = flops224 / t["ours"], flops_det / t_det
            batch = args.batch_size
            print(
                f"| {label}{suffix} | {peak / 1e9:.0f} GFLOP/s | {t['timm'] * 1e3 / batch:.1f} ms/img "
                f"| {t['ours'] * 1e3 / batch:.1f} ms/img | {t['ours'] / t['timm']:.3f} "
                f"| {100 * ours_fps / peak:.0f}% ({ours_fps / 1e9:.0f} GFLOP/s) "
                f"| {t_det * 1e3:.0f} ms/img, {flops_det / 1e9:.0f} GFLOP | {100 * det_fps / peak:.0f}% |"
            )


if __name__ == "__main__":
    main()
