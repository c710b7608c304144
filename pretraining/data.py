"""Image-folder data for masked image modeling, reproducible per (seed, epoch, index).

Every random choice of a sample (crop, flip, mask) comes from a generator seeded
by ``(seed, epoch, index)``, so a run resumed mid-epoch sees exactly the batches
an uninterrupted run would, whatever the number of loader workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from torch.utils.data import Dataset, Sampler

from .masking import BlockMaskGenerator

CLIP_MEAN, CLIP_STD = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(root: str | os.PathLike) -> list[str]:
    """All images under ``root``, recursively (ImageFolder class folders or a flat folder), sorted."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: image folder not found")
    files = [
        os.path.join(d, f)
        for d, _, names in os.walk(root, followlinks=True)
        for f in names
        if f.lower().endswith(IMAGE_EXTENSIONS)
    ]
    if not files:
        raise FileNotFoundError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return sorted(files)


def random_resized_crop_box(
    width: int, height: int, scale: Sequence[float], ratio: Sequence[float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a RandomResizedCrop draw; a centre crop after 10 failed tries."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _to_tensor(img: Image.Image, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (arr - mean) / std


class MIMDataset(Dataset):
    """Yields ``(student_image, teacher_image, mask)`` for an index ``(epoch, i)``.

    Both images are the same crop (RandomResizedCrop, bicubic, random flip),
    normalised with the CLIP mean/std; the teacher's copy is resampled to its own
    size when its patch differs from the student's. ``mask`` is ``(h * w,)`` bool.
    """

    def __init__(
        self,
        files: Sequence[str],
        img_size: int,
        teacher_img_size: int,
        masker: BlockMaskGenerator,
        seed: int = 0,
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> None:
        self.files = list(files)
        self.img_size, self.teacher_img_size = img_size, teacher_img_size
        self.masker, self.seed = masker, seed
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        path = self.files[index]
        try:
            with Image.open(path) as handle:
                img = handle.convert("RGB")
        except OSError as err:
            raise OSError(f"{path}: cannot read image: {err}") from None
        box = random_resized_crop_box(img.width, img.height, self.scale, self.ratio, rng)
        flip = rng.random() < 0.5
        views = []
        for size in dict.fromkeys((self.img_size, self.teacher_img_size)):
            view = img.resize((size, size), Image.BICUBIC, box=box)
            if flip:
                view = view.transpose(Image.FLIP_LEFT_RIGHT)
            views.append(_to_tensor(view, self.mean, self.std))
        mask = torch.from_numpy(self.masker(rng).reshape(-1))
        return views[0], views[-1], mask


class EpochBatchSampler(Sampler):
    """Batches of ``(epoch, index)`` for one rank: a seeded permutation per epoch, sharded by rank.

    ``start_batch`` skips the batches already consumed (resume mid-epoch). The
    last incomplete global batch is dropped so that every rank runs the same
    number of steps.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        epoch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        start_batch: int = 0,
    ) -> None:
        self.num_samples, self.batch_size = num_samples, batch_size
        self.epoch, self.seed, self.rank, self.world = epoch, seed, rank, world
        self.start_batch = start_batch

    @staticmethod
    def batches_per_epoch(num_samples: int, batch_size: int, world: int) -> int:
        return num_samples // (batch_size * world)

    def __len__(self) -> int:
        return max(
            0, self.batches_per_epoch(self.num_samples, self.batch_size, self.world) - self.start_batch
        )

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=gen).tolist()
        mine = order[self.rank :: self.world]
        total = self.batches_per_epoch(self.num_samples, self.batch_size, self.world)
        for b in range(self.start_batch, total):
            yield [(self.epoch, i) for i in mine[b * self.batch_size : (b + 1) * self.batch_size]]
