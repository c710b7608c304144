"""Build each EVA-02 preset and run it on a real photograph (matplotlib's sample of Grace Hopper)."""

from __future__ import annotations

import time

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image
from timm.data import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from backbone import PRESETS, SimpleFeaturePyramid, build_backbone
from toydata.report import record_step


def load_photo(size: tuple[int, int]) -> torch.Tensor:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB").resize(size[::-1], Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None], torch.tensor(OPENAI_CLIP_STD)[:, None, None]
    return ((x - mean) / std)[None]


def timed(fn, *args):
    with torch.inference_mode():
        fn(*args)  # warm-up
        start = time.perf_counter()
        out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    start = time.perf_counter()
    torch.manual_seed(0)
    pretrain_input = load_photo((224, 224))
    det_input = load_photo((512, 384))  # a non-square detection-style input
    print(
        f"photo: grace_hopper.jpg, pre-training view {tuple(pretrain_input.shape)}, "
        f"detection view {tuple(det_input.shape)} (random weights: shapes and speed, not semantics)"
    )
    for name, cfg in PRESETS.items():
        model = build_backbone(name).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        tokens, t_tok = timed(model.forward_tokens, pretrain_input)
        det = build_backbone(
            name,
            img_size=512,
            patch_size=16,
            pretrain_img_size=224,
            use_cls_token=False,
            window_size=16,
            window_block_indexes=[i for i in range(cfg["depth"]) if i % 3 != 2],
        )
        det.eval()
        feat, t_det = timed(det, det_input)
        pyramid = SimpleFeaturePyramid(cfg["embed_dim"], norm="ln", halve_channels=True).eval()
        levels, _ = timed(pyramid, feat["last_feat"])
        shapes = " ".join(f"s{4 * 2**i}:{tuple(level.shape[1:])}" for i, level in enumerate(levels))
        print(
            f"{name:12s} {params:7.2f}M params | tokens {tuple(tokens.shape)} in {t_tok * 1e3:6.0f} ms "
            f"| det 512x384 last_feat {tuple(feat['last_feat'].shape)} in {t_det * 1e3:6.0f} ms "
            f"| pyramid {shapes}"
        )
    record_step(
        "output/demo",
        "backbone",
        seconds=time.perf_counter() - start,
        metrics={"presets": len(PRESETS)},
        what="every EVA-02 preset built and run on a photograph",
        outputs="console",
    )


if __name__ == "__main__":
    main()
