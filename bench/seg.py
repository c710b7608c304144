"""Speed of EVA-02 UperNet and Mask2Former next to mmseg's own BEiT / ViT backbones of the same size.

For each EVA-02 config the same head (UperNet + auxiliary, or Mask2Former) is rebuilt with mmseg's
``BEiT`` and ``VisionTransformer`` backbones (plus mmseg's ``Feature2Pyramid`` neck for the 4
scales, which is what our backbone's fpn1..4 do internally) and timed on random data of the
config's crop size (``--crop`` for one size everywhere):

* training iterations per second (forward + backward + AdamW step, batch ``--batch``) and the
  peak memory of training (CUDA: ``max_memory_allocated``; CPU: growth of the process's resident
  memory over the row, sampled every 5 ms),
* whole-image inference seconds per image at the crop size (mmseg's BEiT accepts no other size),
* sliding-window inference seconds per ``--test-size`` square image (default 1.5 x crop: 2 x 2 windows).

    python tools/benchmark.py seg                    # toy UperNet + Mask2Former and B-512 UperNet, CPU
    python tools/benchmark.py seg --configs configs/seg/toy/upernet_eva02_tiny_toy.py --iters 5
    # UperNet and Mask2Former on the same B backbone (each at its own crop; --crop N for one crop)
    python tools/benchmark.py seg --configs configs/seg/eva02/upernet_eva02_base_12_512_slide_60k.py \
        configs/seg/eva02/mask2former/mask2former_eva02_base_12_896_slide_60k_cocostuff164k.py \
        --batch 2 --backbones eva02
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import os.path as osp
import threading

import torch
from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmengine.utils import import_modules_from_strings
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import seg  # noqa: F401  (registers the EVA02 backbone and the Mask2Former pieces)
from bench.timing import add_common_arguments, apply_threads, seconds_per_call

DEFAULT_CONFIGS = (
    "configs/seg/toy/upernet_eva02_tiny_toy.py",
    "configs/seg/toy/mask2former_eva02_tiny_toy.py",
    "configs/seg/eva02/upernet_eva02_base_12_512_slide_60k.py",
)
BACKBONES = ("eva02", "mmseg-beit", "mmseg-vit")


class PeakMemory:
    """Peak memory of a code block: CUDA's allocator peak, or on CPU the growth of the resident set
    over its value at the start (sampled from /proc/self/statm every 5 ms)."""

    def __enter__(self) -> PeakMemory:
        self.peak_mb = None
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return self
        self._base = self._peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._rss())

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            self.peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = round((max(self._peak, self._rss()) - self._base) / 2**20, 1)


def reference_backbone(kind: str, eva: dict, vit, crop: int) -> tuple[dict, dict]:
    """mmseg ``BEiT`` or ``VisionTransformer`` config of the same width/depth/heads + pyramid neck."""
    common = dict(
        img_size=(crop, crop),
        patch_size=vit.patch_size,
        in_channels=3,
        embed_dims=vit.embed_dim,
        num_layers=vit.depth,
        num_heads=vit.num_heads,
        mlp_ratio=4,
        out_indices=tuple(eva["out_indices"]),
        drop_path_rate=eva.get("drop_path_rate", 0.0),
        norm_cfg=dict(type="LN", eps=1e-6),
    )
    if kind == "beit":
        backbone = dict(type="BEiT", qv_bias=True, init_values=0.1, **common)
    else:
        backbone = dict(
            type="VisionTransformer", qkv_bias=True, with_cls_token=True, final_norm=False, **common
        )
    neck = dict(type="Feature2Pyramid", embed_dim=vit.embed_dim, rescales=[4, 2, 1, 0.5])
    return backbone, neck


def build(model_cfg: dict) -> torch.nn.Module:
    # a ConfigDict: mmdet's Mask2Former head reads its sub-configs by attribute
    model = revert_sync_batchnorm(MODELS.build(ConfigDict(copy.deepcopy(model_cfg))))
    model.init_weights()
    return model


def fake_batch(model, batch: int, size: int, num_classes: int) -> tuple[torch.Tensor, list]:
    inputs = torch.rand(batch, 3, size, size) * 255
    samples = []
    for _ in range(batch):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size)))
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=list(inputs), data_samples=samples), training=True)
    return data["inputs"], data["data_samples"]


def time_train(model, batch: int, size: int, num_classes: int, iters: int, warmup: int) -> float:
    """Training iterations per second."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs, samples = fake_batch(model, batch, size, num_classes)

    def step() -> None:
        losses = model(inputs, samples, mode="loss")
        loss = sum(v for k, v in losses.items() if "loss" in k)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return 1.0 / seconds_per_call(step, iters, warmup)


@torch.no_grad()
def time_infer(model, mode: str, size: int, crop: int, stride: int, iters: int, warmup: int) -> float:
    """Seconds per image of ``mode`` ("whole" or "slide") inference on a ``size`` square image."""
    model.eval()
    model.test_cfg = ConfigDict(mode=mode, crop_size=(crop, crop), stride=(stride, stride))
    img = torch.rand(1, 3, size, size, device=next(model.parameters()).device)
    meta = [dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))]
    return seconds_per_call(lambda: model.inference(img, meta), iters, warmup)


def bench_config(path: str, args: argparse.Namespace) -> list[dict]:
    cfg = Config.fromfile(path)
    if cfg.get("custom_imports"):  # Mask2Former configs also need mmdet's models registered
        import_modules_from_strings(**cfg.custom_imports)
    model_cfg = cfg.model.to_dict()
    crop = args.crop or int(model_cfg["test_cfg"].get("crop_size", (cfg.crop_size[0],))[0])
    own_stride = int(model_cfg["test_cfg"].get("stride", (crop * 2 // 3,))[0])
    stride = crop * 2 // 3 if args.crop else own_stride
    if args.crop:  # the backbone's position grid and the training pad size follow the crop
        model_cfg["backbone"]["img_size"] = crop
        model_cfg["data_preprocessor"]["size"] = (crop, crop)
    test_size = args.test_size or int(crop * 1.5)
    eva = build(model_cfg)
    rows = []
    variants = [("eva02", model_cfg)]
    for kind in ("beit", "vit"):
        ref = copy.deepcopy(model_cfg)
        ref["backbone"], ref["neck"] = reference_backbone(kind, model_cfg["backbone"], eva.backbone, crop)
        variants.append((f"mmseg-{kind}", ref))
    del eva
    for name, mcfg in variants:
        if name not in args.backbones:
            continue
        model = build(mcfg).to(args.device)
        n_params = sum(p.numel() for p in model.parameters())
        num_classes = mcfg["decode_head"]["num_classes"]
        with PeakMemory() as memory:
            train_it_s = time_train(model, args.batch_size, crop, num_classes, args.iters, args.warmup)
        row = dict(
            config=path,
            backbone=name,
            head=mcfg["decode_head"]["type"],
            params_m=round(n_params / 1e6, 2),
            crop=crop,
            batch=args.batch_size,
            train_it_s=round(train_it_s, 3),
            train_peak_mem_mb=memory.peak_mb,
            # whole-image at the crop size: mmseg's BEiT only accepts its configured input size
            whole_s_per_img=round(time_infer(model, "whole", crop, crop, stride, args.iters, args.warmup), 4),
            slide_s_per_img=round(
                time_infer(model, "slide", test_size, crop, stride, args.iters, args.warmup), 4
            ),
            test_size=test_size,
            device=str(args.device),
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    add_common_arguments(parser, batch_size=2, iters=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--test-size", type=int, default=0, help="inference image side (default: 1.5 x crop)")
    parser.add_argument("--crop", type=int, default=0, help="crop size for every config (default: its own)")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--out", help="write all rows as JSON here")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    init_default_scope("mmseg")
    torch.manual_seed(0)
    rows = [row for path in args.configs for row in bench_config(path, args)]
    header = ("config", "backbone", "params(M)", "train it/s", "peak MB", "whole s/img", "slide s/img")
    print("\n{:<48} {:<12} {:>9} {:>10} {:>9} {:>11} {:>11}".format(*header))
    for r in rows:
        print(
            f"{osp.basename(r['config'])[:48]:<48} {r['backbone']:<12} {r['params_m']:>9} "
            f"{r['train_it_s']:>10} {r['train_peak_mem_mb']!s:>9} {r['whole_s_per_img']:>11} "
            f"{r['slide_s_per_img']:>11}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
