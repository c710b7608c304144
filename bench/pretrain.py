"""Pre-training step time per image and the fraction of matmul peak reached.

    python tools/benchmark.py pretrain [--model eva02_base] [--teacher-arch eva02_base_patch16_clip_224]
        [--batch-size 4] [--steps 3] [--device cpu|cuda] [--amp none|bf16]

Student: the EVA-02 preset at 224 px / patch 14 (released pre-training geometry, 105 masked patches).
Teacher: a randomly initialised EVA-CLIP tower of the same size (weights do not change the cost).
One step = teacher forward + student forward/backward + AdamW update. FLOPs are counted with
torch's counter plus the CPU attention kernel (:mod:`bench.flops`); the peak is the best of a few
large square matmuls in the same dtype.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from backbone import build_backbone
from bench.flops import flop_counter
from bench.timing import add_common_arguments, apply_threads, best_interleaved, seconds_per_call
from pretraining import BlockMaskGenerator, MIMStudent, neg_cosine_loss, released_init
from pretraining.schedule import build_optimizer
from pretraining.teacher import CLIPTeacher


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of ``size``-square matmuls."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / best_interleaved({"mm": lambda: a @ b}, repeats)["mm"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="eva02_base")
    parser.add_argument(
        "--teacher-arch", default="eva02_base_patch16_clip_224", help="timm EVA-CLIP architecture"
    )
    parser.add_argument("--teacher-dim", type=int, default=512, help="CLIP projection width of the teacher")
    add_common_arguments(parser, batch_size=4, iters=3)
    parser.add_argument("--amp", choices=("none", "bf16"), default="none")
    parser.add_argument("--act-checkpoint", action="store_true")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    import timm

    device = torch.device(args.device)
    torch.manual_seed(0)
    vit = build_backbone(args.model, use_act_checkpoint=args.act_checkpoint)
    grid = vit.grid
    teacher_model = timm.create_model(args.teacher_arch, pretrained=False, num_classes=args.teacher_dim)
    patch = int(teacher_model.patch_embed.patch_size[0])
    teacher_model = timm.create_model(
        args.teacher_arch, pretrained=False, num_classes=args.teacher_dim, img_size=grid[0] * patch
    )
    teacher = CLIPTeacher(teacher_model, args.teacher_arch).to(device)
    student = MIMStudent(vit, teacher.out_dim, stop_grad_conv1=True)
    released_init(student)
    student.to(device).train()
    optimizer = build_optimizer(student, 1.5e-3, 0.05, (0.9, 0.98), 1e-6)
    masker = BlockMaskGenerator(grid, 105, min_num_patches=16)
    rng = np.random.default_rng(0)
    b = args.batch_size
    images = torch.randn(b, 3, grid[0] * vit.patch_size, grid[1] * vit.patch_size, device=device)
    teacher_images = torch.randn(b, 3, grid[0] * patch, grid[1] * patch, device=device)
    mask = torch.from_numpy(np.stack([masker(rng).reshape(-1) for _ in range(b)])).to(device)
    dtype = torch.bfloat16 if args.amp == "bf16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            target = teacher(teacher_images)[mask]
            loss = neg_cosine_loss(student(images, mask), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        optimizer.step()

    counter = flop_counter()
    with counter:
        step()  # warm-up, and the FLOP count of one step
    flops = counter.get_total_flops()
    seconds = seconds_per_call(step, args.iters, warmup=0)
    peak = matmul_peak(device, torch.bfloat16 if dtype else torch.float32)
    achieved = flops / seconds
    threads = torch.get_num_threads() if device.type == "cpu" else None
    print(
        f"device {device}{f' ({threads} threads)' if threads else ''}, student {args.model} "
        f"({sum(p.numel() for p in student.parameters()) / 1e6:.0f}M), teacher {args.teacher_arch} "
        f"({sum(p.numel() for p in teacher.parameters()) / 1e6:.0f}M) at {grid[0] * patch} px, batch {b}, "
        f"amp {args.amp}"
    )
    print(f"step {seconds:.3f} s = {seconds / b * 1e3:.1f} ms/image; {flops / b / 1e9:.1f} GFLOP/image")
    print(f"achieved {achieved / 1e9:.1f} GFLOP/s; matmul peak {peak / 1e9:.1f} GFLOP/s", end=" ")
    print(f"-> {achieved / peak:.1%} of peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
