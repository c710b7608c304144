"""Whole-checkpoint conversion between the file formats this toolkit meets (``tools/convert_checkpoint.py``).

Inputs (detected): original EVA-02 MIM / fine-tuned checkpoints (tiny/small fused layout, base/large
sub-LN layout, ``model``/``module``/``state_dict`` wrappers, RoPE buffers), timm ``Eva`` state dicts,
EVA-02-CLIP towers (EVA-CLIP ``visual.``, OpenCLIP ``visual.trunk.``; their inner attention
LayerNorm is carried to every output), pre-training checkpoints of ``tools/pretrain.py``,
detectron2 checkpoints of this project (``backbone.net.``) and mmseg checkpoints (``backbone.``).

Outputs: ``timm`` a timm ``Eva`` state dict and ``eva02`` the original release layout ({"model": ...},
with ``mask_token``/``norm``/``lm_head`` when present), here; ``det`` (detectron2, :mod:`det.convert`)
and ``seg`` (mmseg, :mod:`seg.convert`) with their framework adapters, looked up by :func:`convert`.

Geometry: the patch kernel is resized to ``patch_size`` and the position embedding to the grid of
the same image size at the new patch size (224 px: 16 x 16 at patch 14 -> 14 x 14 at patch 16, as
the released ``p14to16`` files), or to ``pos_grid``. RoPE tables are dropped (they are recomputed).
The key-name mapping itself is :mod:`backbone.convert`; the prefix and "enough tensors" rules are
the loader's (:func:`backbone.convert.find_prefix`, :func:`backbone.checkpoint.require_enough_matched`).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field

import torch

from .checkpoint import CheckpointError, require_enough_matched, unwrap_state_dict
from .convert import find_prefix, from_internal, to_internal
from .io import atomic_save, read_checkpoint
from .pos_embed import resize_patch_kernel, resize_pos_grid, split_prefix
from .presets import PRESETS, infer_preset
from .vit import EVA02ViT

Tensor = torch.Tensor
# Output formats: module and function of each (det and seg live with their framework adapters and are
# imported only when asked for, so that backbone never needs detectron2 or mmseg).
TARGETS = {
    "det": "det.convert:to_detectron2",
    "seg": "seg.convert:to_mmseg",
    "timm": "backbone.conversion:to_timm",
    "eva02": "backbone.conversion:to_eva02",
}
# Prefixes of the framework checkpoints, to name the kind of an input.
DET_PREFIX = "backbone.net."
SEG_PREFIX = "backbone."
# Pre-training extras of the release layout, kept for ``eva02``.
_MIM_EXTRAS = re.compile(r"^(mask_token|norm\.(weight|bias)|lm_head\.(weight|bias))$")


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
    """Tensors of a checkpoint file through the safe reader; ``trust_pickle`` unpickles any object.

    mmseg training checkpoints (message hub, numpy logs) are read with mmengine's data-only
    classes allow-listed (:func:`seg.safe_load.mmengine_checkpoint_globals`, when mmseg is installed).
    """
    if trust_pickle:
        return unwrap_state_dict(read_checkpoint(path, trust_pickle=True), path)
    try:
        return unwrap_state_dict(read_checkpoint(path), path)
    except CheckpointError as err:
        if "refusing to unpickle" not in str(err):
            raise
        allow = _mmengine_globals()
        if allow:
            try:
                return unwrap_state_dict(read_checkpoint(path, allow=allow), path)
            except CheckpointError:
                pass
        raise CheckpointError(f"{err} If you trust this file, pass --trust-pickle.") from None


def _mmengine_globals() -> list:
    try:
        from seg.safe_load import mmengine_checkpoint_globals
    except ImportError:
        return []
    return mmengine_checkpoint_globals()


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
            raise CheckpointError(f"unknown model {model!r}; choose one of {sorted(PRESETS)}")
        raise CheckpointError(f"{source}: checkpoint is {detected}, not {model}")
    bad = [f"{k}: {_shape(sd[k])} vs {s}" for k, s in shapes.items() if k in sd and _shape(sd[k]) != s]
    if bad:
        raise CheckpointError(f"{source}: tensors do not fit an EVA-02 ViT ({detected}): {bad[:4]}")
    report.missing = {k: s for k, s in shapes.items() if k not in sd}
    require_enough_matched(
        len(shapes) - len(report.missing), len(shapes), source,
        "refusing to write a checkpoint that would leave the backbone mostly untouched "
        f"(missing e.g. {list(report.missing)[:5]})",
    )  # fmt: skip
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


@dataclass
class BackboneConversion:
    """The backbone of a checkpoint in the internal layout, resized, plus what lies outside it."""

    sd: dict[str, Tensor]  # internal names
    prefix: str
    rest: dict[str, Tensor]  # tensors outside the backbone prefix (detector heads, necks, ...)
    extras: dict[str, Tensor]  # release pre-training extras (mask token, final norm, LM head)
    report: Report


def convert_backbone(
    raw: dict[str, Tensor],
    to: str,
    source: str = "<state dict>",
    model: str | None = None,
    patch_size: int | None = None,
    pos_grid: int | None = None,
    patch_resize: str = "bicubic",
) -> BackboneConversion:
    """Detect, check and resize the backbone of ``raw`` for the output format ``to``."""
    report = Report(source, target=to)
    try:
        sd, dropped, layout = to_internal(raw)
    except KeyError as err:
        raise CheckpointError(f"{source}: {err.args[0]}") from None
    prefix = find_prefix(raw)
    report.kind, report.layout = _source_kind(raw, prefix, layout), layout
    report.dropped = {
        k: _shape(v) for k, v in dropped.items() if not (to == "eva02" and _MIM_EXTRAS.match(k))
    }
    _check(sd, model, report, source)
    _resize_geometry(sd, patch_size, pos_grid, patch_resize, report)
    rest = {k: v for k, v in raw.items() if not k.startswith(prefix)} if prefix else {}
    extras = {k: v for k, v in {**rest, **dropped}.items() if _MIM_EXTRAS.match(k)}
    return BackboneConversion(sd, prefix, rest, extras, report)


def finish_report(conv: BackboneConversion, carried: dict[str, Tensor]) -> Report:
    """Record the converted and carried tensors; everything else outside the backbone is dropped."""
    report = conv.report
    report.converted = sorted(conv.sd)
    report.carried = sorted(carried)
    report.dropped.update(
        {k: _shape(v) for k, v in conv.rest.items() if k not in carried and k not in report.dropped}
    )
    return report


def to_timm(raw: dict[str, Tensor], source: str = "<state dict>", **options) -> tuple[dict, Report]:
    """A timm ``Eva`` state dict."""
    conv = convert_backbone(raw, "timm", source, **options)
    return from_internal(conv.sd, "timm"), finish_report(conv, {})


def to_eva02(raw: dict[str, Tensor], source: str = "<state dict>", **options) -> tuple[dict, Report]:
    """The original release layout, ``{"model": ...}``, with the pre-training extras when present."""
    conv = convert_backbone(raw, "eva02", source, **options)
    return {"model": {**from_internal(conv.sd, "eva02"), **conv.extras}}, finish_report(conv, conv.extras)


def convert(raw: dict[str, Tensor], to: str, source: str = "<state dict>", **options) -> tuple[dict, Report]:
    """Convert a raw state dict to the format ``to`` (one of :data:`TARGETS`); the object to save and
    the report. ``options``: ``model``, ``patch_size``, ``pos_grid``, ``patch_resize`` and, for ``det``,
    ``num_classes`` / ``drop_class_heads``."""
    if to not in TARGETS:
        raise ValueError(f"--to must be one of {tuple(TARGETS)}, got {to!r}")
    module, name = TARGETS[to].split(":")
    return getattr(importlib.import_module(module), name)(raw, source, **options)


def check_options(options: dict) -> None:
    """Refuse a geometry or class count below 1 before reading anything (named as its flag)."""
    for name in ("patch_size", "pos_grid", "num_classes"):
        value = options.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be an integer >= 1")


def convert_file(input: str, output: str, to: str, trust_pickle: bool = False, **options) -> Report:
    """Read ``input`` safely, convert it and write ``output`` atomically (the conversion tool's body)."""
    if os.path.abspath(input) == os.path.abspath(output):
        raise ValueError("--output must differ from --input")
    check_options(options)
    out, report = convert(read_input(input, trust_pickle), to, input, **options)
    atomic_save(out, output)
    return report
