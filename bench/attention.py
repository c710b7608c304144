"""The attention kernels against the matmul peak, at the detection geometry's attention shapes.

    python tools/benchmark.py attention [--threads 2] [--iters 5] [--reduced]

``eva02_base`` at 1024 px, patch 16: a window block attends 16 windows of 16 x 16 tokens, a global
block 4096 tokens; 12 heads of 64. Each shape runs through torch's fused
``scaled_dot_product_attention`` and through the plain ``softmax(q k^T / sqrt(d)) v`` (two batched
GEMMs around a softmax), interleaved with a 2048^3 fp32 matmul whose best FLOP/s is the reference
of the same run. FLOPs are the two products, 4 * windows * heads * tokens^2 * head_dim (as
:mod:`bench.flops` counts SDPA). This is what bounds the profile's efficiency figure
(docs/performance.md): the GEMM share runs near the peak, attention does not.
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F

from bench.timing import add_common_arguments, apply_threads, best_interleaved

SHAPES = {  # (batch x windows, heads, tokens, head_dim)
    "window block (16 windows of 256 tokens)": (16, 12, 256, 64),
    "global block (4096 tokens)": (1, 12, 4096, 64),
}
REDUCED_SHAPES = {"window (4 windows of 16 tokens)": (4, 3, 16, 64), "global (64 tokens)": (1, 3, 64, 64)}


def attention_flops(shape: tuple[int, int, int, int]) -> int:
    batch, heads, tokens, head_dim = shape
    return 4 * batch * heads * tokens**2 * head_dim


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v


def run(args: argparse.Namespace) -> list[dict]:
    shapes, size = (REDUCED_SHAPES, 256) if args.reduced else (SHAPES, 2048)
    a, b = torch.randn(size, size), torch.randn(size, size)
    rows = []
    with torch.no_grad():
        for name, shape in shapes.items():
            q, k, v = (torch.randn(shape) for _ in range(3))
            best = best_interleaved(
                {
                    "matmul": lambda: a @ b,
                    "sdpa": partial(F.scaled_dot_product_attention, q, k, v),
                    "plain": partial(plain_attention, q, k, v),
                },
                args.iters,
            )
            peak = 2 * size**3 / best["matmul"]
            flops = attention_flops(shape)
            row = {"shape": name, "flops": flops, "matmul_GFLOPs": peak / 1e9}
            for kernel in ("sdpa", "plain"):
                row[f"{kernel}_ms"] = best[kernel] * 1e3
                row[f"{kernel}_share_of_peak"] = flops / best[kernel] / peak
            rows.append(row)
    return rows


def table(rows: list[dict], threads: int) -> str:
    lines = [
        f"**attention kernels, CPU {threads} threads, fp32 (best of the run; % of the same-run matmul)**",
        "",
        "| shape | GFLOP | matmul GFLOP/s | SDPA | plain softmax(q k^T) v |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['flops'] / 1e9:.2f} | {r['matmul_GFLOPs']:.1f} "
            f"| {r['sdpa_ms']:.1f} ms, {r['sdpa_share_of_peak']:.0%} "
            f"| {r['plain_ms']:.1f} ms, {r['plain_share_of_peak']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, batch_size=1, iters=5, device="cpu")
    parser.add_argument("--reduced", action="store_true", help="toy shapes, for a quick check")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    print(table(run(args), torch.get_num_threads()))


if __name__ == "__main__":
    main()
