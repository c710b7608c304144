"""Where the eager forward of the detection backbone spends its time, by kind of operator.

    python tools/benchmark.py profile [--threads 2] [--iters 4] [--out output/profile.json]
    python tools/benchmark.py profile --compile      # the regional compile switch (compile_blocks)
    python tools/benchmark.py profile --reduced      # toy geometry, for a quick check

``eva02_base`` at the detection geometry (1024 px, patch 16, window 16, global blocks 2/5/8/11:
:data:`bench.backbone.DET_GEOMETRY`), batch 1, inference (``no_grad``), on CPU. ``torch.profiler``
records ``--iters`` forward passes (after a warm-up) with Python stacks; every operator's self CPU
time goes to one kind:

* by the backbone function it runs under: RoPE (``backbone/rope.py``: tables and application), window
  partition / unpartition (``window_partition``, ``window_unpartition_heads``: copies, pad);
* else by operator name: matmul / linear (incl. the patch-embedding convolution), attention (SDPA),
  LayerNorm, softmax, element-wise (add, mul, SiLU gate, ...), other layout work (head split and
  merge copies, views, cat, allocations), fused kernels of the compiled blocks, other.

Shares are of the operators' summed self CPU time (Python time between operators is reported
apart). The efficiency line divides the FLOPs of one forward (:mod:`bench.flops`, attention
included) by the best of ``--iters`` forward passes timed without the profiler, interleaved with a
2048^3 fp32 matmul whose best FLOP/s is the reference of the same run.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from backbone import build_backbone
from backbone.io import atomic_write_text
from bench.backbone import DET_GEOMETRY
from bench.flops import count_flops
from bench.gpu import REDUCED_GEOMETRY
from bench.timing import best_interleaved

KINDS = (
    "matmul / linear",
    "attention (SDPA)",
    "LayerNorm",
    "softmax",
    "element-wise (add, mul, SiLU gate)",
    "RoPE (tables + application)",
    "window partition / unpartition (copies, pad)",
    "other layout (head split / merge, views, cat, alloc)",
    "compiled fused kernels",
    "other",
)
# the backbone function an operator runs under decides first (nearest enclosing one wins)
_BY_FUNCTION = (
    ("backbone/rope.py(", "RoPE (tables + application)"),
    (": window_partition", "window partition / unpartition (copies, pad)"),
    (": window_unpartition_heads", "window partition / unpartition (copies, pad)"),
)
_BY_NAME = (
    # inductor names a fused kernel after the ops it fuses ("graph_1_cpp_fused_addmm_cat_..."): first
    (("cpp_fused", "triton_", "kernel_cpp"), "compiled fused kernels"),
    (("addmm", "::mm", "bmm", "matmul", "linear", "convolution", "conv2d"), "matmul / linear"),
    (("scaled_dot_product", "flash_attention", "efficient_attention"), "attention (SDPA)"),
    (("layer_norm",), "LayerNorm"),
    (("softmax",), "softmax"),
    (
        ("::add", "::mul", "::silu", "::gelu", "::addcmul", "::sub", "::div", "::neg", "::where"),
        "element-wise (add, mul, SiLU gate)",
    ),
    (
        (
            "copy_",
            "clone",
            "contiguous",
            "reshape",
            "view",
            "permute",
            "transpose",
            "pad",
            "cat",
            "unbind",
            "chunk",
            "split",
            "slice",
            "select",
            "expand",
            "as_strided",
            "empty",
            "flatten",
            "unflatten",
            "narrow",
            "alias",
            "::t",
            "unsqueeze",
            "flip",
            "zeros",
            "zero_",
            "detach",
            "::to",
            "_to_copy",
            "lift_fresh",
            "resize_",
        ),
        "other layout (head split / merge, views, cat, alloc)",
    ),  # fmt: skip
)
REDUCED_ARGS = dict(preset="eva02_tiny", geometry=REDUCED_GEOMETRY, matmul_n=256)
FULL_ARGS = dict(preset="eva02_base", geometry=DET_GEOMETRY, matmul_n=2048)


def _is_operator(name: str) -> bool:
    return "::" in name or any(k in name for k in ("cpp_fused", "triton_", "kernel_cpp"))


def classify(event) -> str:
    """The kind of one operator event (see the module docstring)."""
    parent = event.cpu_parent
    while parent is not None:
        for marker, kind in _BY_FUNCTION:
            if marker in parent.name:
                return kind
        parent = parent.cpu_parent
    name = event.name
    for keys, kind in _BY_NAME:
        if any(k in name for k in keys):
            return kind
    return "other"


def kind_shares(events) -> tuple[dict[str, float], float]:
    """Self CPU microseconds per kind over the operator events, and the rest (Python) in microseconds."""
    per_kind: dict[str, float] = defaultdict(float)
    python = 0.0
    for event in events:
        if _is_operator(event.name):
            per_kind[classify(event)] += event.self_cpu_time_total
        elif event.cpu_parent is not None or event.name.startswith("nn.Module"):
            python += event.self_cpu_time_total
    return dict(per_kind), python


def build(preset: str, geometry: dict, compile_blocks: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(preset, compile_blocks=compile_blocks, **geometry).eval()


def run(args: argparse.Namespace) -> dict:
    cfg = REDUCED_ARGS if args.reduced else FULL_ARGS
    if args.compile:  # fused kernels then show up by name in the profile
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
    model = build(cfg["preset"], cfg["geometry"], args.compile)
    side = model.img_size[0]
    x = torch.randn(1, 3, side, side)
    n = cfg["matmul_n"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.no_grad():
        flops = count_flops(model, x)
        model(x)  # warm-up (and compilation)
        best = best_interleaved({"forward": lambda: model(x), "matmul": lambda: a @ b}, args.iters)
        with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
            for _ in range(args.iters):
                model(x)
    per_kind, python_us = kind_shares(prof.events())
    total = sum(per_kind.values())
    peak = 2 * n**3 / best["matmul"]
    achieved = flops / best["forward"]
    return {
        "preset": cfg["preset"],
        "geometry": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg["geometry"].items()},
        "compile": args.compile,
        "threads": torch.get_num_threads(),
        "reduced": args.reduced,
        "profiled_passes": args.iters,
        "kinds": {
            kind: {"self_ms_per_pass": per_kind[kind] / 1e3 / args.iters, "share": per_kind[kind] / total}
            for kind in KINDS
            if kind in per_kind
        },
        "operator_ms_per_pass": total / 1e3 / args.iters,
        "python_ms_per_pass": python_us / 1e3 / args.iters,
        "flops": flops,
        "forward_s": best["forward"],
        "matmul_n": n,
        "matmul_GFLOPs": peak / 1e9,
        "achieved_GFLOPs": achieved / 1e9,
        "efficiency": achieved / peak,
    }


def table(result: dict) -> str:
    geometry = result["geometry"]
    title = (
        f"{result['preset']} at {geometry['img_size']} px, window {geometry['window_size']}, "
        f"{'compiled blocks' if result['compile'] else 'eager'}, CPU {result['threads']} threads"
        + (" (reduced)" if result["reduced"] else "")
    )
    lines = [f"**{title}**", "", "| kind | self CPU ms / pass | share |", "|---|---|---|"]
    for kind, row in result["kinds"].items():
        lines.append(f"| {kind} | {row['self_ms_per_pass']:.1f} | {100 * row['share']:.1f}% |")
    lines += [
        "",
        f"operators {result['operator_ms_per_pass']:.1f} ms / pass; Python between them (profiled, "
        f"with stacks) {result['python_ms_per_pass']:.1f} ms / pass",
        f"forward {result['forward_s'] * 1e3:.1f} ms (best of {result['profiled_passes']}, unprofiled), "
        f"{result['flops'] / 1e9:.1f} GFLOP (attention counted) = {result['achieved_GFLOPs']:.1f} GFLOP/s "
        f"= {100 * result['efficiency']:.1f}% of the fp32 {result['matmul_n']}^3 matmul "
        f"({result['matmul_GFLOPs']:.1f} GFLOP/s, same run, interleaved)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--iters", type=int, default=4, help="profiled and timed forward passes")
    p.add_argument("--compile", action="store_true", help="compile each block (compile_blocks=True)")
    p.add_argument("--reduced", action="store_true", help="eva02_tiny on a 64 px grid (2 blocks)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args)
    text = table(result)
    print(text)
    if args.out:
        atomic_write_text(args.out, json.dumps({**result, "table": text}, indent=1) + "\n")


if __name__ == "__main__":
    main()
