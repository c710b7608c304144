"""Reading checkpoint files and loading them into an :class:`EVA02ViT`."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .convert import StateDict, find_prefix, to_internal
from .io import CheckpointError, read_checkpoint
from .pos_embed import resize_patch_kernel, resize_pos_grid, split_prefix
from .presets import PRESETS, infer_preset
from .vit import EVA02ViT

logger = logging.getLogger(__name__)

_WRAPPERS = ("model", "module", "state_dict", "model_state")
_INNER_LN = re.compile(r"^blocks\.\d+\.attn\.inner_attn_ln\.")
# The inner attention LayerNorm under any layout's name (release, timm) and prefix.
_INNER_LN_ANY = re.compile(r"blocks\.\d+\.attn\.(inner_attn_ln|norm)\.weight$")


# A checkpoint that fills less than this share of the backbone is refused (loading and conversion):
# most likely a foreign checkpoint, which would otherwise leave the model silently random.
MIN_MATCHED_FRACTION = 0.5


def require_enough_matched(found: int, total: int, source: str, consequence: str) -> None:
    """The one "enough tensors matched" rule of loading and conversion."""
    if found < MIN_MATCHED_FRACTION * total:
        raise CheckpointError(f"{source}: only {found} of {total} backbone tensors match; {consequence}")


@dataclass
class LoadReport:
    source: str
    layout: str
    prefix: str
    loaded: list[str] = field(default_factory=list)
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"checkpoint {self.source}: layout '{self.layout}', prefix '{self.prefix}'",
            f"  loaded {len(self.loaded)} tensors, resized {len(self.resized)}, "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, dropped {len(self.dropped)}",
        ]
        lines += [f"  resized {k}: {list(a)} -> {list(b)}" for k, (a, b) in self.resized.items()]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                shown = ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else "")
                lines.append(f"  {title}: {shown}")
        return "\n".join(lines)


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Load a checkpoint file safely (tensors and plain containers only) and unwrap it to a state dict."""
    return unwrap_state_dict(read_checkpoint(path), os.fspath(path))


def unwrap_state_dict(obj: object, source: str = "<state dict>") -> StateDict:
    """Descend through ``model`` / ``module`` / ``state_dict`` wrappers to the tensors."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: no tensors found (keys: {list(obj)[:8]})")
    return tensors


def load_checkpoint(
    model: EVA02ViT,
    checkpoint: str | os.PathLike | Mapping,
    strict: bool = True,
    patch_resize: str = "bicubic",
    source: str | None = None,
) -> LoadReport:
    """Load any known EVA-02 checkpoint layout into ``model`` and return a report.

    The patch kernel and the position embedding are resized to the model's
    geometry; the cls token and the cls slot of the position embedding are
    dropped when the model has no cls token. Tensors outside a backbone
    (pre-training and CLIP heads, final norms, RoPE buffers) are dropped and
    listed in the report. With ``strict`` every backbone tensor must be found
    and every other tensor must have a slot; without it at least half must be
    found (so that a foreign checkpoint never silently leaves the model random)
    and tensors without a slot are logged as warnings. In both modes a model of
    another size or of another attention type (an EVA-02-CLIP tower's inner
    attention LayerNorm on one side only) is refused: it would compute a
    different network. ``source`` names a state dict's file in messages.
    """
    if source is None:
        source = "<state dict>" if isinstance(checkpoint, Mapping) else os.fspath(checkpoint)
    raw = (
        unwrap_state_dict(checkpoint, source)
        if isinstance(checkpoint, Mapping)
        else read_state_dict(checkpoint)
    )
    try:
        sd, dropped, layout = to_internal(raw)
    except KeyError as err:
        raise CheckpointError(f"{source}: {err.args[0]}") from None
    prefix = find_prefix(raw)
    report = LoadReport(source, layout, prefix, dropped=sorted(dropped))
    _check_architecture(model, sd, raw, source)

    target = model.state_dict()
    ready: StateDict = {}
    for key, value in sd.items():
        if key == "cls_token" and model.cls_token is None:  # pre-trained ViT -> detector, as released
            report.dropped.append(key)
            continue
        if key not in target:
            report.unexpected.append(key)
            continue
        want = target[key].shape
        if key == "patch_embed.proj.weight" and value.shape[-2:] != want[-2:]:
            value = resize_patch_kernel(value, tuple(want[-2:]), patch_resize)
        elif key == "pos_embed" and value.shape != want:
            value = _fit_pos_embed(value, model)
        if value.shape != want:
            raise CheckpointError(
                f"{source}: '{prefix}{key}' has shape {list(value.shape)}, model expects {list(want)}"
            )
        if value.shape != sd[key].shape:
            report.resized[key] = (tuple(sd[key].shape), tuple(value.shape))
        ready[key] = value.to(target[key].dtype)
    report.loaded = sorted(ready)
    report.missing = sorted(k for k in target if k not in ready)
    if strict and report.missing:
        raise CheckpointError(
            f"{source}: {len(report.missing)} backbone tensors missing, e.g. {report.missing[:5]}"
        )
    if report.unexpected:
        shown = [prefix + k for k in report.unexpected[:5]]
        if strict:
            raise CheckpointError(
                f"{source}: {len(report.unexpected)} checkpoint tensors have no slot in the model, "
                f"e.g. {shown} (strict=False loads the rest and ignores them)"
            )
        logger.warning(
            "%s: %d tensors without a slot ignored, e.g. %s", source, len(report.unexpected), shown
        )
    require_enough_matched(len(ready), len(target), source, "refusing to leave the model random")
    model.load_state_dict(ready, strict=False)
    logger.info(report.summary())
    return report


def _check_architecture(model: EVA02ViT, sd: StateDict, raw: StateDict, source: str) -> None:
    """Refuse a checkpoint of another width, depth or attention type than ``model``."""
    patch = sd.get("patch_embed.proj.weight")
    depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.")), default=-1)
    width = patch.shape[0] if patch is not None else None
    inner = any(_INNER_LN.match(k) for k in sd)
    model_inner = any(blk.attn.inner_attn_ln is not None for blk in model.blocks)
    seen = infer_preset(width or 0, depth, inner) or "an unknown size"
    mine = infer_preset(model.embed_dim, model.depth, model_inner) or "custom"
    if width != model.embed_dim or depth != model.depth:
        raise CheckpointError(
            f"{source}: checkpoint is {seen} (width {width}, depth {depth}) but the model is {mine} "
            f"(width {model.embed_dim}, depth {model.depth})"
        )
    if inner and not model_inner:
        key = next(k for k in raw if _INNER_LN_ANY.search(k))
        raise CheckpointError(
            f"{source}: checkpoint is an EVA-02-CLIP vision tower ({seen}): its attention has an inner "
            f"LayerNorm ('{key}') that the model ({mine}) has no slot for, and without it the model "
            "computes a different network. Build the backbone with inner_attn_norm=True (presets "
            f"{', '.join(_clip_presets())})."
        )
    if model_inner and not inner:
        raise CheckpointError(
            f"{source}: the model ({mine}) has an inner attention LayerNorm (inner_attn_norm=True, an "
            f"EVA-02-CLIP tower) but the checkpoint ({seen}) has none: build the backbone with "
            "inner_attn_norm=False for this checkpoint."
        )


def _clip_presets() -> list[str]:
    return [name for name, cfg in PRESETS.items() if cfg.get("inner_attn_norm")]


def _fit_pos_embed(value: torch.Tensor, model: EVA02ViT) -> torch.Tensor:
    try:
        cls_slot, grid_tokens, grid = split_prefix(value)
    except ValueError as err:
        raise CheckpointError(f"pos_embed: {err}") from None
    grid_tokens = resize_pos_grid(grid_tokens, grid, model.pos_grid)
    if model.num_prefix_tokens:
        if cls_slot.shape[1] == 0:
            raise CheckpointError(
                "pos_embed: the model has a cls token but the checkpoint has no cls position"
            )
        return torch.cat((cls_slot, grid_tokens), dim=1)
    return grid_tokens
