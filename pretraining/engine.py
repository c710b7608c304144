"""The pre-training loop: plain PyTorch with DDP, AMP, gradient accumulation and resumable state."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from backbone.io import remove_stale_temporaries
from backbone.presets import build_backbone

from .data import EpochBatchSampler, MIMDataset, list_images
from .distributed import DistInfo, barrier, init_distributed, mean_across_ranks
from .init import released_init
from .loss import neg_cosine_loss
from .masking import BlockMaskGenerator
from .recipes import PretrainConfig
from .schedule import build_optimizer, lr_at
from .state import (
    LAST,
    check_compatible,
    load_training_state,
    resolve_resume,
    restore_rng,
    save_training_state,
)
from .student import MIMStudent
from .teacher import CLIPTeacher, build_teacher

logger = logging.getLogger(__name__)
_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_num_mask_patches(grid: tuple[int, int]) -> int:
    """105 of 256 patches as released, scaled to other grids."""
    return max(1, round(grid[0] * grid[1] * 105 / 256))


def build_models(cfg: PretrainConfig, device: torch.device) -> tuple[MIMStudent, CLIPTeacher]:
    """Student (released init, seeded by ``cfg.seed``) and frozen teacher."""
    with torch.random.fork_rng(devices=[]):  # the same student on every run and every rank
        torch.manual_seed(cfg.seed)
        vit = build_backbone(
            cfg.model,
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            use_cls_token=True,
            drop_path_rate=cfg.drop_path,
            use_act_checkpoint=cfg.act_checkpoint,
            compile_blocks=cfg.compile,
            **dict(cfg.model_overrides),
        )
        teacher = build_teacher(cfg.teacher, vit.grid, cfg.teacher_ckpt or None, seed=cfg.seed)
        student = MIMStudent(vit, teacher.out_dim, stop_grad_conv1=cfg.stop_grad_conv1)
        released_init(student)
    return student.to(device), teacher.to(device)


def _accum_steps(cfg: PretrainConfig, world: int) -> int:
    per_step = cfg.batch_size * world
    total = cfg.total_batch_size or per_step
    if total % per_step:
        raise ValueError(
            f"total batch {total} is not a multiple of batch_size {cfg.batch_size} x {world} processes; "
            f"choose --batch-size so that it divides {total // world if total % world == 0 else total}"
        )
    return total // per_step


class _Plan:
    """Step arithmetic shared by the loop and the resume logic."""

    def __init__(self, cfg: PretrainConfig, num_images: int, world: int) -> None:
        self.accum = _accum_steps(cfg, world)
        batches = EpochBatchSampler.batches_per_epoch(num_images, cfg.batch_size, world)
        self.steps_per_epoch = batches // self.accum
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{num_images} images cannot fill one optimizer batch of "
                f"{cfg.batch_size} x {world} processes x {self.accum} accumulation steps"
            )
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        if cfg.warmup_steps is not None:
            self.warmup_steps = cfg.warmup_steps
        else:
            self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)


def train(cfg: PretrainConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) pre-training; returns a summary with the loss history and the checkpoint path."""
    log = log or logger.info
    dist_info = init_distributed(cfg.device)
    device = dist_info.device
    amp_dtype = _AMP.get(cfg.amp, "bad")
    if amp_dtype == "bad":
        raise ValueError(f"amp must be one of {sorted(_AMP)}, got {cfg.amp!r}")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs a GPU; use --amp bf16 or none on CPU")

    student, teacher = build_models(cfg, device)
    grid = student.grid
    files = list_images(cfg.data)
    masker = BlockMaskGenerator(
        grid,
        cfg.num_mask_patches or default_num_mask_patches(grid),
        min_num_patches=cfg.min_mask_patches_per_block,
        max_num_patches=cfg.max_mask_patches_per_block,
        min_aspect=cfg.mask_min_aspect,
    )
    dataset = MIMDataset(
        files, cfg.img_size, grid[0] * teacher.patch_size, masker, cfg.seed, cfg.crop_scale, cfg.crop_ratio
    )
    plan = _Plan(cfg, len(files), dist_info.world_size)
    optimizer = build_optimizer(student, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    step = 0
    history: list[tuple[int, float]] = []
    resume_path = resolve_resume(cfg.resume, cfg.output_dir)
    if resume_path:
        state = load_training_state(resume_path)
        check_compatible(state, cfg, dist_info.world_size, resume_path)
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        history = [(int(s), float(v)) for s, v in state.get("history", [])]  # the run so far
        restore_rng(state)
        log(f"resumed from {resume_path} at step {step}")
    else:
        torch.manual_seed(cfg.seed + dist_info.rank)  # drop-path stream per rank

    model: torch.nn.Module = student
    if dist_info.world_size > 1:
        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    if dist_info.is_main:
        remove_stale_temporaries(cfg.output_dir)  # interrupted checkpoint writes of a killed run
        log(
            f"pre-training {cfg.model} ({sum(p.numel() for p in student.parameters()) / 1e6:.1f}M params) "
            f"with teacher {cfg.teacher} -> {teacher.out_dim}-d targets on {len(files)} images, {masker}; "
            f"{plan.total_steps} steps of {cfg.batch_size}x{dist_info.world_size}x{plan.accum} images, "
            f"{plan.warmup_steps} warm-up steps, device {device}"
        )
    runner = _Runner(cfg, dist_info, model, student, teacher, optimizer, scaler, plan, amp_dtype, log)
    runner.history = history
    return runner.run(dataset, step)


class _Runner:
    def __init__(
        self, cfg, dist_info: DistInfo, model, student, teacher, optimizer, scaler, plan, amp_dtype, log
    ):
        self.cfg, self.dist, self.model, self.student, self.teacher = cfg, dist_info, model, student, teacher
        self.optimizer, self.scaler, self.plan, self.amp_dtype, self.log = (
            optimizer,
            scaler,
            plan,
            amp_dtype,
            log,
        )
        self.history: list[tuple[int, float]] = []
        self.writer = None
        if dist_info.is_main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(cfg.output_dir, "tb"))

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.amp_dtype)

    def _loader(self, dataset: MIMDataset, epoch: int, start_batch: int) -> DataLoader:
        sampler = EpochBatchSampler(
            len(dataset),
            self.cfg.batch_size,
            epoch,
            self.cfg.seed,
            self.dist.rank,
            self.dist.world_size,
            start_batch,
        )
        # A private generator: the loader must not draw from the global RNG (drop path uses it).
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.dist.device.type == "cuda",
            generator=torch.Generator(),
        )

    def _micro_step(self, batch, sync: bool) -> torch.Tensor:
        device = self.dist.device
        images, teacher_images, mask = (t.to(device, non_blocking=True) for t in batch)
        ddp = isinstance(self.model, DistributedDataParallel)
        with self.model.no_sync() if ddp and not sync else contextlib.nullcontext():
            with self._autocast():
                target = self.teacher(teacher_images)[mask]
                prediction = self.model(images, mask)
            loss = neg_cosine_loss(prediction, target)
            self.scaler.scale(loss / self.plan.accum).backward()
        return loss.detach()

    def _optimizer_step(self) -> torch.Tensor:
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.student.parameters() if p.grad is not None]
        max_norm = self.cfg.clip_grad if self.cfg.clip_grad > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return grad_norm

    def run(self, dataset: MIMDataset, step: int) -> dict[str, Any]:
        cfg, plan = self.cfg, self.plan
        bar = None
        if self.dist.is_main and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=plan.total_steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
        images_per_step = cfg.batch_size * self.dist.world_size * plan.accum
        start_time, start_step = time.perf_counter(), step
        self.model.train()
        while step < plan.total_steps:
            epoch, in_epoch = divmod(step, plan.steps_per_epoch)
            batches = iter(self._loader(dataset, epoch, in_epoch * plan.accum))
            for _ in range(in_epoch, plan.steps_per_epoch):
                if step >= plan.total_steps:
                    break
                lr = lr_at(step, plan.total_steps, plan.warmup_steps, cfg.lr, cfg.min_lr)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=self.dist.device)
                for micro in range(plan.accum):
                    loss_sum += self._micro_step(next(batches), sync=micro == plan.accum - 1)
                grad_norm = self._optimizer_step()
                step += 1
                self._after_step(step, loss_sum / plan.accum, lr, grad_norm, bar)
                if cfg.stop_after is not None and step >= cfg.stop_after:
                    break
            del batches
            if cfg.stop_after is not None and step >= cfg.stop_after:
                break
        elapsed = time.perf_counter() - start_time
        if bar is not None:
            bar.close()
        if self.writer is not None:
            self.writer.close()
        steps_run = step - start_step
        return {
            "step": step,
            "history": self.history,
            "checkpoint": os.path.join(cfg.output_dir, LAST),
            "seconds_per_image": elapsed / max(1, steps_run * images_per_step),
        }

    def _after_step(self, step: int, loss: torch.Tensor, lr: float, grad_norm: torch.Tensor, bar) -> None:
        cfg = self.cfg
        last = step == self.plan.total_steps or step == cfg.stop_after
        if step % cfg.log_every == 0 or last or step == 1:
            value = float(mean_across_ranks(loss))
            self.history.append((step, value))
            if self.dist.is_main:
                self.log(
                    f"step {step}/{self.plan.total_steps}  loss {value:.4f}  lr {lr:.3e}  "
                    f"grad {float(grad_norm):.3f}"
                )
                if self.writer is not None:
                    self.writer.add_scalar("train/loss", value, step)
                    self.writer.add_scalar("train/lr", lr, step)
                    self.writer.add_scalar("train/grad_norm", float(grad_norm), step)
        if bar is not None:
            bar.update(1)
            if self.history:
                bar.set_postfix(loss=f"{self.history[-1][1]:.4f}", lr=f"{lr:.2e}")
        if step % cfg.save_every == 0 or last:
            if self.dist.is_main:
                state = (self.student, self.optimizer, self.scaler, step, cfg)
                state += (self.dist.world_size, self.history)
                save_training_state(os.path.join(cfg.output_dir, LAST), *state)
                if cfg.keep_every and step % cfg.keep_every == 0:
                    save_training_state(os.path.join(cfg.output_dir, f"checkpoint-{step:07d}.pth"), *state)
            barrier()
