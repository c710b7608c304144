"""BEiT-style block-wise masking of the patch grid."""

from __future__ import annotations

import math

import numpy as np


class BlockMaskGenerator:
    """Mask about ``num_masking_patches`` patches of an ``(h, w)`` grid as a union of rectangles.

    Each rectangle has an area drawn uniformly in ``[min_num_patches, remaining budget]``
    (the budget also capped by ``max_num_patches``) and an aspect ratio drawn log-uniformly
    in ``[min_aspect, max_aspect]``. A rectangle is kept when it adds at least one new patch
    and no more than the remaining budget, so the total never exceeds the target. Up to 10
    placements are tried per rectangle; when none adds a patch the mask is returned as is
    (this is rare at the released 105 of 256 patches).
    """

    def __init__(
        self,
        grid: tuple[int, int],
        num_masking_patches: int,
        min_num_patches: int = 16,
        max_num_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ) -> None:
        height, width = int(grid[0]), int(grid[1])
        if height < 1 or width < 1:
            raise ValueError(f"mask grid must be positive, got {grid}")
        if not 0 < num_masking_patches <= height * width:
            raise ValueError(f"num_masking_patches={num_masking_patches} must lie in [1, {height * width}]")
        if min_num_patches < 1:
            raise ValueError(f"min_num_patches must be >= 1, got {min_num_patches}")
        if min_aspect <= 0:
            raise ValueError(f"min_aspect must be > 0, got {min_aspect}")
        self.height, self.width = height, width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1.0 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    def __repr__(self) -> str:
        return (
            f"BlockMaskGenerator(grid=({self.height}, {self.width}), num={self.num_masking_patches}, "
            f"block=[{self.min_num_patches}, {self.max_num_patches}], "
            f"aspect=[{math.exp(self.log_aspect[0]):.3f}, {math.exp(self.log_aspect[1]):.3f}])"
        )

    def _add_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        for _ in range(10):
            # a + (b - a) * u also covers budget < min_num_patches (then the area lies in [budget, min]).
            area = self.min_num_patches + (budget - self.min_num_patches) * rng.random()
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (w < self.width and h < self.height):
                continue
            top = int(rng.integers(0, self.height - h + 1))
            left = int(rng.integers(0, self.width - w + 1))
            window = mask[top : top + h, left : left + w]
            new = h * w - int(window.sum())
            if 0 < new <= budget:
                window[...] = True
                return new
        return 0

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """A boolean ``(h, w)`` mask; ``rng`` makes the draw reproducible."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < self.num_masking_patches:
            budget = min(self.num_masking_patches - count, self.max_num_patches)
            added = self._add_block(mask, budget, rng)
            if added == 0:
                break
            count += added
        return mask
