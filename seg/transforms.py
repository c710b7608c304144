"""Test-time resize of the released multi-scale evaluation (short side never below the crop)."""

from __future__ import annotations

from mmcv.transforms import BaseTransform, Resize
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ShortSideAtLeastResize(BaseTransform):
    """Resize keeping the aspect ratio so the short side is ``max(int(short * ratio), min_short)``.

    This is what the released multi-scale evaluation did for ratio ``r`` of the base scale
    ``(2048, 512)``: the short side becomes ``int(512 * r)``, but never less than the crop size, so
    sliding-window inference always sees full windows (ratios below 1 fall back to the crop size).
    The long side follows the aspect ratio without a cap.
    """

    def __init__(self, ratio: float, short: int = 512, min_short: int = 512) -> None:
        if ratio <= 0 or short <= 0 or min_short < 0:
            raise ValueError(
                f"ShortSideAtLeastResize: bad ratio={ratio}, short={short}, min_short={min_short}"
            )
        self.ratio = ratio
        self.short = short
        self.min_short = min_short

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) after resizing; rounding as mmcv's ``rescale_size``."""
        new_short = max(int(self.short * self.ratio), self.min_short)
        factor = new_short / min(height, width)
        return int(width * factor + 0.5), int(height * factor + 0.5)

    def transform(self, results: dict) -> dict:
        h, w = results["img"].shape[:2]
        return Resize(scale=self.target_size(h, w), keep_ratio=False)(results)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ratio={self.ratio}, short={self.short}, min_short={self.min_short})"
