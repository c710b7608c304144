"""Segment your own images and save colour-coded masks (mmseg's inference API and visualizer).

    python tools/seg_infer.py CONFIG CHECKPOINT IMAGE_OR_DIR [...] --out-dir DIR [--opacity 0.5]

For every image writes ``DIR/<name>_overlay.png`` (prediction blended over the picture, with
class names) and ``DIR/<name>_mask.png`` (the palette colours only), plus ``DIR/<name>_labels.png``
holding the raw class indices.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp

import cv2
import numpy as np
import torch
from mmseg.apis import inference_model, init_model, show_result_pyplot

import seg  # noqa: F401  (registers the EVA02 backbone and the Mask2Former pieces)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(inputs: list[str]) -> list[str]:
    paths = []
    for item in inputs:
        if osp.isdir(item):
            paths += sorted(osp.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_SUFFIXES))
        elif osp.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {inputs}")
    return paths


def colour_mask(labels: np.ndarray, palette: list) -> np.ndarray:
    """RGB picture of a label map; labels without a palette entry stay black."""
    table = np.zeros((max(256, len(palette)), 3), np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)
    return table[labels]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f"checkpoint file not found: {args.checkpoint}")
    os.makedirs(args.out_dir, exist_ok=True)
    model = init_model(args.config, args.checkpoint, device=args.device)
    palette = model.dataset_meta["palette"]
    for path in list_images(args.images):
        result = inference_model(model, path)
        stem = osp.splitext(osp.basename(path))[0]
        labels = result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
        show_result_pyplot(
            model,
            path,
            result,
            opacity=args.opacity,
            show=False,
            with_labels=True,
            out_file=osp.join(args.out_dir, f"{stem}_overlay.png"),
        )
        cv2.imwrite(osp.join(args.out_dir, f"{stem}_mask.png"), colour_mask(labels, palette)[..., ::-1])
        cv2.imwrite(osp.join(args.out_dir, f"{stem}_labels.png"), labels)
        present = ", ".join(model.dataset_meta["classes"][i] for i in np.unique(labels) if i < len(palette))
        print(f"{path}: {present}")


if __name__ == "__main__":
    main()
