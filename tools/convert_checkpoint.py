"""Convert EVA-02 checkpoints between every layout this toolkit meets.

    python tools/convert_checkpoint.py --input IN --output OUT --to {det,seg,timm,eva02} \
        [--model eva02_base] [--patch-size 16] [--pos-grid 14] [--num-classes 80 | --drop-class-heads]

Inputs (detected): original EVA-02 MIM / fine-tuned checkpoints (tiny/small fused layout, base/large
sub-LN layout, ``model``/``module``/``state_dict`` wrappers, RoPE buffers), timm ``Eva`` state dicts,
EVA-02-CLIP towers (EVA-CLIP ``visual.``, OpenCLIP ``visual.trunk.``; their inner attention
LayerNorm is carried to every output), pre-training checkpoints of ``tools/pretrain.py``,
detectron2 checkpoints of this project (``backbone.net.``) and mmseg checkpoints (``backbone.``).

Outputs: ``det`` a detectron2 ``train.init_checkpoint`` ({"model": {"backbone.net.<name>": ...}}, plus
the neck and heads when the input is a detector), ``seg`` an mmseg ``pretrained`` checkpoint
({"state_dict": {"backbone.<name>": ...}}), ``timm`` a timm ``Eva`` state dict, ``eva02`` the
original release layout ({"model": ...}, with ``mask_token``/``norm``/``lm_head`` when present).

Geometry: the patch kernel is resized to ``--patch-size`` (default 16 for det/seg, unchanged
otherwise) and the position embedding to the grid of the same image size at the new patch size
(224 px: 16 x 16 at patch 14 -> 14 x 14 at patch 16, as the released ``p14to16`` files), or to
``--pos-grid``. RoPE tables are dropped (they are recomputed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backbone.checkpoint import CheckpointError, read_state_dict, unwrap_state_dict  # noqa: E402
from backbone.convert import from_internal, to_internal  # noqa: E402
from backbone.mim.atomic import atomic_save  # noqa: E402
from backbone.pos_embed import resize_patch_kernel, resize_pos_grid, split_prefix  # noqa: E402
from backbone.presets import PRESETS, infer_preset  # noqa: E402
from backbone.vit import EVA02ViT  # noqa: E402

Tensor = torch.Tensor
TARGETS = ("det", "seg", "timm", "eva02")
DET_PREFIX = "backbone.net."
SEG_PREFIX = "backbone."
# Pre-training extras of the release layout, kept for ``--to eva02``.
_MIM_EXTRAS = re.compile(r"^(mask_token|norm\.(weight|bias)|lm_head\.(weight|bias))$")
# Class-specific detector tensors (detectron2 Cascade / Mask R-CNN names).
_CLS_SCORE = re.compile(r"^roi_heads\.box_predictor(\.\d+)?\.cls_score\.(weight|bias)$")
_BBOX_PRED = re.compile(r"^roi_heads\.box_predictor(\.\d+)?\.bbox_pred\.(weight|bias)$")
_MASK_PRED = re.compile(r"^roi_heads\.mask_head\.predictor\.(weight|bias)$")


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


@dataclass
class Report:
    source: str
    kind: str = ""
    layout: str = ""
    model: str = ""
    target: str = ""
    converted: list[str] = field(default_factory=list)
    resized: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    dropped: dict[str, list[int]] = field(default_factory=dict)
    missing: dict[str, list[int]] = field(default_factory=dict)
    carried: list[str] = field(default_factory=list)
    reinitialised: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"input  {self.source}: {self.kind} checkpoint, '{self.layout}' layout, model {self.model}",
            f"output {self.target}: {len(self.converted)} backbone tensors, {len(self.resized)} resized, "
            f"{len(self.missing)} missing, {len(self.dropped)} dropped, "
            f"{len(self.carried)} non-backbone kept, "
            f"{len(self.reinitialised)} re-initialised",
        ]
        lines += [f"  resized        {k}: {a} -> {b}" for k, (a, b) in self.resized.items()]
        lines += [f"  re-initialised {k}: {a} -> {b}" for k, (a, b) in self.reinitialised.items()]
        lines += [f"  dropped        {k}: {s}" for k, s in self.dropped.items()]
        lines += [f"  missing        {k}: {s}" for k, s in self.missing.items()]
        return "\n".join(lines)


def read_input(path: str, trust_pickle: bool = False) -> dict[str, Tensor]:
    """Tensors of a checkpoint file; ``trust_pickle`` also unpickles any object (trusted files only)."""
    if not trust_pickle:
        try:
            return read_state_dict(path)
        except CheckpointError as err:
            if "refusing to unpickle" not in str(err):
                raise
            if _allow_mmengine_objects():  # mmseg training checkpoints: message hub, numpy logs
                try:
                    return read_state_dict(path)
                except CheckpointError:
                    pass
            raise CheckpointError(f"{err} If you trust this file, pass --trust-pickle.") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # anything a damaged or foreign pickle raises
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint: {type(err).__name__}: {err}"
        ) from None
    return unwrap_state_dict(obj, path)


def _allow_mmengine_objects() -> bool:
    """Allow-list the data-only types of mmengine checkpoints (needs mmseg installed)."""
    try:
        from seg.safe_load import allow_mmengine_checkpoints
    except ImportError:
        return False
    allow_mmengine_checkpoints()
    return True


def _source_kind(raw: dict[str, Tensor], prefix: str, layout: str) -> str:
    if prefix == DET_PREFIX:
        return "detectron2"
    if prefix == SEG_PREFIX:
        return "mmseg"
    if prefix.endswith("visual.trunk."):
        return "OpenCLIP"
    if prefix.endswith("visual."):
        return "EVA-CLIP"
    if prefix == "vit." and "mask_token" in raw:
        return "pretrain (tools/pretrain.py)"
    return {"eva02": "original EVA-02", "timm": "timm Eva", "internal": "EVA-02 (this toolkit)"}[layout]


def _expected(sd: dict[str, Tensor]) -> tuple[dict[str, list[int]], str]:
    """Backbone tensor shapes implied by ``sd``'s width, depth and MLP, from a one-block EVA02ViT."""
    patch = sd.get("patch_embed.proj.weight")
    w12 = next((v for k, v in sd.items() if re.fullmatch(r"blocks\.\d+\.mlp\.w12\.weight", k)), None)
    if patch is None or w12 is None:
        raise CheckpointError("no patch embedding or SwiGLU MLP weights: not an EVA-02 ViT checkpoint")
    width, p = patch.shape[0], patch.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hidden = w12.shape[0] // 2
    sub_ln = any(".mlp.ffn_ln." in k for k in sd)
    inner = any(".attn.inner_attn_ln." in k for k in sd)  # EVA-02-CLIP towers
    heads = next((c["num_heads"] for c in PRESETS.values() if c["embed_dim"] == width), max(1, width // 64))
    one = EVA02ViT(
        embed_dim=width, depth=1, num_heads=heads, mlp_ratio=(hidden + 0.5) / width, sub_ln=sub_ln,
        inner_attn_norm=inner, patch_size=p, img_size=p, use_cls_token="cls_token" in sd,
    )  # fmt: skip
    shapes = {}
    for key, value in one.state_dict().items():
        if key.startswith("blocks.0."):
            for i in range(depth):
                shapes[f"blocks.{i}.{key[9:]}"] = list(value.shape)
        elif key != "pos_embed":  # any grid is fine
            shapes[key] = list(value.shape)
    name = infer_preset(width, depth, inner) or (
        f"custom (width {width}, depth {depth}, MLP {hidden}, sub-LN {sub_ln}, inner attention LN {inner})"
    )
    return shapes, name


def _check(sd: dict[str, Tensor], model: str | None, report: Report, source: str) -> None:
    shapes, detected = _expected(sd)
    report.model = detected
    if model and model != detected:
        if model not in PRESETS:
            raise CheckpointError(f"unknown --model {model!r}; choose one of {sorted(PRESETS)}")
        raise CheckpointError(f"{source}: checkpoint is {detected}, not --model {model}")
    bad = [f"{k}: {_shape(sd[k])} vs {s}" for k, s in shapes.items() if k in sd and _shape(sd[k]) != s]
    if bad:
        raise CheckpointError(f"{source}: tensors do not fit an EVA-02 ViT ({detected}): {bad[:4]}")
    report.missing = {k: s for k, s in shapes.items() if k not in sd}
    found = len(shapes) - len(report.missing)
    if found < 0.5 * len(shapes):
        raise CheckpointError(
            f"{source}: only {found} of {len(shapes)} backbone tensors found; refusing to write a checkpoint "
            f"that would leave the backbone mostly untouched (missing e.g. {list(report.missing)[:5]})"
        )
    extra = [k for k in sd if k not in shapes and k != "pos_embed"]
    in_blocks = [k for k in extra if k.startswith("blocks.")]
    if in_blocks:  # dropping them would change what the blocks compute
        raise CheckpointError(
            f"{source}: block tensors with no counterpart in an EVA-02 ViT ({detected}): {in_blocks[:4]}"
        )
    for key in extra:
        report.dropped[key] = _shape(sd.pop(key))  # outside the backbone (e.g. an mmseg neck)


def _resize_geometry(
    sd: dict[str, Tensor], patch_size: int | None, pos_grid: int | None, method: str, report: Report
) -> None:
    kernel = sd["patch_embed.proj.weight"]
    src_patch = kernel.shape[-1]
    new_patch = patch_size or src_patch
    if new_patch != src_patch or kernel.shape[-2] != kernel.shape[-1]:
        sd["patch_embed.proj.weight"] = resize_patch_kernel(kernel, (new_patch, new_patch), method)
        report.resized["patch_embed.proj.weight"] = (_shape(kernel), _shape(sd["patch_embed.proj.weight"]))
    if "pos_embed" not in sd:
        return
    pos = sd["pos_embed"]
    try:
        cls_slot, tokens, grid = split_prefix(pos)
    except ValueError as err:
        raise CheckpointError(f"pos_embed: {err}") from None
    side = pos_grid or max(1, round(grid[0] * src_patch / new_patch))
    if (side, side) != grid:
        sd["pos_embed"] = torch.cat((cls_slot, resize_pos_grid(tokens, grid, (side, side))), dim=1)
        report.resized["pos_embed"] = (_shape(pos), _shape(sd["pos_embed"]))


def _class_heads(
    rest: dict[str, Tensor], num_classes: int | None, drop: bool, report: Report
) -> dict[str, Tensor]:
    """Objects365 -> COCO/LVIS: keep neck, RPN and box-head trunks; re-initialise or drop predictors."""
    scores = [v for k, v in rest.items() if _CLS_SCORE.match(k) and k.endswith("weight")]
    if not scores or (num_classes is None and not drop):
        return rest
    src = scores[0].shape[0] - 1
    if num_classes == src and not drop:
        return rest
    out = {}
    gen = torch.Generator().manual_seed(0)
    for key, value in rest.items():
        is_bbox = _BBOX_PRED.match(key) and value.shape[0] == 4 * src  # class-specific regression only
        if not (_CLS_SCORE.match(key) or is_bbox or _MASK_PRED.match(key)):
            out[key] = value
            continue
        if drop:
            report.dropped[key] = _shape(value)
            continue
        rows = num_classes + 1 if _CLS_SCORE.match(key) else num_classes * (4 if is_bbox else 1)
        new = value.new_zeros((rows, *value.shape[1:]))
        if key.endswith("weight"):  # detectron2's own initialisation of these layers
            std = 0.01 if _CLS_SCORE.match(key) else 0.001
            new.normal_(0.0, std, generator=gen)
        out[key] = new
        report.reinitialised[key] = (_shape(value), _shape(new))
    return out


def convert(
    raw: dict[str, Tensor],
    to: str,
    source: str = "<state dict>",
    model: str | None = None,
    patch_size: int | None = None,
    pos_grid: int | None = None,
    num_classes: int | None = None,
    drop_class_heads: bool = False,
    patch_resize: str = "bicubic",
) -> tuple[dict, Report]:
    """Convert a raw state dict; returns the object to save and the report."""
    if to not in TARGETS:
        raise ValueError(f"--to must be one of {TARGETS}, got {to!r}")
    report = Report(source, target=to)
    try:
        sd, dropped, layout = to_internal(raw)
    except KeyError as err:
        raise CheckpointError(f"{source}: {err.args[0]}") from None
    prefix = next(k[: -len("patch_embed.proj.weight")] for k in raw if k.endswith("patch_embed.proj.weight"))
    report.kind, report.layout = _source_kind(raw, prefix, layout), layout
    report.dropped = {
        k: _shape(v) for k, v in dropped.items() if not (to == "eva02" and _MIM_EXTRAS.match(k))
    }
    _check(sd, model, report, source)
    if patch_size is None and to in ("det", "seg"):
        patch_size = 16  # the released dense-prediction models all use patch 16
    _resize_geometry(sd, patch_size, pos_grid, patch_resize, report)
    if to == "det" and "cls_token" in sd:
        report.dropped["cls_token"] = _shape(sd.pop("cls_token"))  # the detectors have none
    report.converted = sorted(sd)

    rest = {k: v for k, v in raw.items() if not k.startswith(prefix)} if prefix else {}
    extras = {k: v for k, v in {**rest, **dropped}.items() if _MIM_EXTRAS.match(k)}
    heads = {}
    if to == "det" and prefix == DET_PREFIX:  # detector -> detector: keep neck, RPN and heads
        heads = _class_heads(rest, num_classes, drop_class_heads, report)
    carry = heads if to == "det" else extras if to == "eva02" else {}
    report.carried = sorted(carry)
    report.dropped.update(
        {k: _shape(v) for k, v in rest.items() if k not in carry and k not in report.dropped}
    )
    if to == "det":
        return {"model": {**{DET_PREFIX + k: v for k, v in sd.items()}, **heads}}, report
    if to == "seg":
        return {"state_dict": {SEG_PREFIX + k: v for k, v in sd.items()}}, report
    out = from_internal(sd, to)
    return ({"model": {**out, **extras}}, report) if to == "eva02" else (out, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="checkpoint to convert")
    parser.add_argument("--output", required=True, help="file to write (atomically)")
    parser.add_argument("--to", required=True, choices=TARGETS)
    parser.add_argument(
        "--model", choices=sorted(PRESETS), help="expected size; an input of another size fails"
    )
    parser.add_argument("--patch-size", type=int, help="patch size of the output (default: 16 for det/seg)")
    parser.add_argument("--pos-grid", type=int, help="side of the stored position-embedding grid")
    parser.add_argument("--patch-resize", choices=("bicubic", "pinv"), default="bicubic")
    heads = parser.add_mutually_exclusive_group()
    heads.add_argument(
        "--num-classes", type=int, help="det: re-initialise class-specific predictors for K classes"
    )
    heads.add_argument("--drop-class-heads", action="store_true", help="det: drop class-specific predictors")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="unpickle non-tensor objects (trusted files)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        print("error: --output must differ from --input", file=sys.stderr)
        return 2
    if os.path.exists(args.output) and not args.force:
        print(f"error: {args.output} exists (pass --force to overwrite)", file=sys.stderr)
        return 2
    try:
        raw = read_input(args.input, args.trust_pickle)
        out, report = convert(
            raw, args.to, args.input, args.model, args.patch_size, args.pos_grid, args.num_classes,
            args.drop_class_heads, args.patch_resize,
        )  # fmt: skip
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_save(out, args.output)
    print(report.text())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
