"""Pure state-dict conversions between checkpoint layouts.

Layouts:
  ``internal`` this toolkit: fused ``attn.qkv`` + ``q_bias``/``v_bias``, optional
               ``attn.inner_attn_ln``, packed SwiGLU ``mlp.w12`` (gate first), optional
               ``mlp.ffn_ln``, ``mlp.w3``.
  ``eva02``    the original release. Tiny/small use the internal names; base/large have
               ``attn.{q,k,v}_proj.weight`` + ``q_bias``/``v_bias`` and ``mlp.w1``/``w2``/``ffn_ln``/``w3``.
               MIM checkpoints add ``mask_token``, ``lm_head``, ``norm``; RoPE buffers may be present.
               The EVA-02-CLIP towers (``visual.``) are base/large with ``attn.inner_attn_ln``.
  ``timm``     timm's ``Eva``: tiny/small ``attn.qkv`` + ``q_bias``/``v_bias``, ``mlp.fc1``/``fc2``;
               base/large ``attn.{q,k,v}_proj`` (q/v with bias), ``mlp.fc1_g``/``fc1_x``/``norm``/``fc2``;
               the CLIP towers add ``attn.norm`` (OpenCLIP keeps them under ``visual.trunk.``).
Prefixes from wrappers (``module.``, ``visual.`` of EVA-CLIP, ``backbone.net.`` of detectron2,
``backbone.`` of mmseg, ...) are found and stripped by :func:`strip_prefix`.
"""

from __future__ import annotations

import re

import torch

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

# Keys outside the backbone proper that the known formats carry; dropped on conversion.
_NON_BACKBONE = re.compile(
    r"^(mask_token|lm_head\..*|norm\..*|fc_norm\..*|head\..*|rel_pos_bias\..*|.*\.rope\..*|rope\..*"
    r"|.*\.freqs_(cos|sin)|.*\.k_bias)$"
)
_ANCHOR = "patch_embed.proj.weight"


def find_prefix(state_dict: StateDict) -> str:
    """The prefix of the backbone in a checkpoint: the shortest one before ``patch_embed.proj.weight``.

    The one prefix rule of the toolkit (loading, conversion and reports all use it).
    """
    anchors = [k for k in state_dict if k.endswith(_ANCHOR)]
    if not anchors:
        raise KeyError(f"no '{_ANCHOR}' key: this does not look like a ViT state dict")
    return min(anchors, key=len)[: -len(_ANCHOR)]


def strip_prefix(state_dict: StateDict) -> tuple[StateDict, str]:
    """Keep the keys under :func:`find_prefix`'s prefix, without that prefix."""
    prefix = find_prefix(state_dict)
    out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return out, prefix


def detect_layout(state_dict: StateDict) -> str:
    """``internal``, ``eva02`` or ``timm`` for a prefix-free state dict."""
    keys = state_dict.keys()
    if any(".mlp.fc1_g." in k or ".mlp.fc1." in k or ".attn.q_proj.bias" in k for k in keys):
        return "timm"
    if any(".attn.q_proj.weight" in k or ".mlp.w1." in k for k in keys):
        return "eva02"
    if any(".attn.qkv.weight" in k for k in keys) and any(".mlp.w12." in k for k in keys):
        is_release = any(k == "mask_token" or "rope" in k or k.startswith("lm_head") for k in keys)
        return "eva02" if is_release else "internal"
    raise KeyError("unrecognised ViT layout: no attention/MLP keys of a known EVA-02 format")


def _cat(*parts: Tensor) -> Tensor:
    return torch.cat(parts, dim=0)


def to_internal(state_dict: StateDict) -> tuple[StateDict, StateDict, str]:
    """Convert any known layout to ours.

    Returns ``(converted, dropped, layout)``: ``dropped`` holds the keys that are
    not part of a backbone (pre-training heads, RoPE buffers, ...). Keys that are
    neither converted nor known to be droppable are passed through unchanged so
    that the loader can report them as unexpected.
    """
    sd, _ = strip_prefix(state_dict)
    layout = detect_layout(sd)
    out: StateDict = {}
    dropped: StateDict = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if _NON_BACKBONE.match(key):
            dropped[key] = value
            continue
        m = re.match(r"^(blocks\.\d+\.)(attn|mlp)\.(.+)$", key)
        if not m:
            out[key] = value
            continue
        block, part, leaf = m.groups()
        name = _rename_leaf(layout, part, leaf)
        if name.startswith("@"):  # a piece of a fused tensor, joined below
            pending.setdefault(block, {})[name] = value
        else:
            out[block + name] = value
    for block, parts in pending.items():
        _join(block, parts, out)
    return out, dropped, layout


def _rename_leaf(layout: str, part: str, leaf: str) -> str:
    if part == "attn":
        if layout == "timm":
            leaf = {"q_proj.bias": "q_bias", "v_proj.bias": "v_bias"}.get(leaf, leaf)
            leaf = re.sub(r"^norm\.", "inner_attn_ln.", leaf)
        if leaf in ("q_proj.weight", "k_proj.weight", "v_proj.weight"):
            return "@" + leaf[0]
        return "attn." + leaf
    if layout == "timm":
        leaf = re.sub(r"^fc1_g\.", "@gate.", leaf)
        leaf = re.sub(r"^fc1_x\.", "@value.", leaf)
        leaf = re.sub(r"^fc1\.", "w12.", leaf)
        leaf = re.sub(r"^norm\.", "ffn_ln.", leaf)
        leaf = re.sub(r"^fc2\.", "w3.", leaf)
    else:
        leaf = re.sub(r"^w1\.", "@gate.", leaf)
        leaf = re.sub(r"^w2\.", "@value.", leaf)
    return leaf if leaf.startswith("@") else "mlp." + leaf


def _join(block: str, parts: dict[str, Tensor], out: StateDict) -> None:
    q, k, v = (parts.pop(f"@{n}", None) for n in "qkv")
    if any(t is not None for t in (q, k, v)):
        if q is None or k is None or v is None:
            raise KeyError(f"{block}attn: q/k/v projection weights are incomplete")
        out[block + "attn.qkv.weight"] = _cat(q, k, v)
    for leaf in ("weight", "bias"):
        gate, value = parts.pop(f"@gate.{leaf}", None), parts.pop(f"@value.{leaf}", None)
        if (gate is None) != (value is None):
            raise KeyError(f"{block}mlp: SwiGLU gate/value {leaf} is incomplete")
        if gate is not None:
            out[block + f"mlp.w12.{leaf}"] = _cat(gate, value)


def from_internal(state_dict: StateDict, layout: str) -> StateDict:
    """Convert our layout to ``eva02`` (release) or ``timm``."""
    if layout not in ("eva02", "timm", "internal"):
        raise ValueError(f"unknown target layout {layout!r}; expected 'eva02', 'timm' or 'internal'")
    if layout == "internal":
        return dict(state_dict)
    sub_ln = any(".mlp.ffn_ln." in k for k in state_dict)
    out: StateDict = {}
    for key, value in state_dict.items():
        m = re.match(r"^(blocks\.\d+\.)(attn|mlp)\.(.+)$", key)
        if not m:
            out[key] = value
            continue
        block, part, leaf = m.groups()
        out.update({block + k: v for k, v in _split_leaf(layout, sub_ln, part, leaf, value).items()})
    return out


def _split_leaf(layout: str, sub_ln: bool, part: str, leaf: str, value: Tensor) -> StateDict:
    if part == "attn":
        if leaf == "qkv.weight" and sub_ln:
            q, k, v = value.chunk(3, dim=0)
            return {"attn.q_proj.weight": q, "attn.k_proj.weight": k, "attn.v_proj.weight": v}
        if sub_ln and layout == "timm" and leaf in ("q_bias", "v_bias"):
            return {f"attn.{leaf[0]}_proj.bias": value}
        if layout == "timm" and leaf.startswith("inner_attn_ln."):
            return {"attn.norm." + leaf[len("inner_attn_ln.") :]: value}
        return {"attn." + leaf: value}
    if leaf.startswith("w12.") and (sub_ln or layout == "timm"):
        if not sub_ln:  # timm packs tiny/small the same way, under another name
            return {"mlp.fc1." + leaf[4:]: value}
        gate, val = value.chunk(2, dim=0)
        names = ("fc1_g", "fc1_x") if layout == "timm" else ("w1", "w2")
        return {f"mlp.{names[0]}.{leaf[4:]}": gate, f"mlp.{names[1]}.{leaf[4:]}": val}
    if layout == "timm":
        leaf = re.sub(r"^ffn_ln\.", "norm.", leaf)
        leaf = re.sub(r"^w3\.", "fc2.", leaf)
    return {"mlp." + leaf: value}
