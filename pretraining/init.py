"""The released EVA-02 pre-training initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn

from .student import MIMStudent


def _xavier_normal_rows(weight: torch.Tensor, parts: int) -> None:
    """Xavier-normal init of a fused weight as ``parts`` separate (out/parts, in) matrices."""
    for chunk in weight.chunk(parts, dim=0):
        nn.init.xavier_normal_(chunk)


@torch.no_grad()
def released_init(student: MIMStudent) -> None:
    """Initialise ``student`` as the released pre-training did.

    * every Linear: xavier normal, zero bias; every LayerNorm: ones / zeros;
      the base/large release had separate q/k/v and w1/w2 projections, so the
      fused ``qkv`` and ``w12`` are initialised chunk by chunk with the fan of
      one projection; tiny/small were fused already;
    * patch embedding: xavier uniform over the flattened kernel;
    * ``pos_embed``, ``cls_token``, ``mask_token``: normal(0.02) truncated at +-0.02;
    * sub-LN models (base/large): ``mlp.w*``, ``attn.proj`` and the value
      projection are multiplied by sqrt(log(2 * depth)).
    """
    vit = student.vit
    sub_ln = any(isinstance(blk.mlp.ffn_ln, nn.LayerNorm) for blk in vit.blocks)
    for module in student.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for blk in vit.blocks:
        if blk.attn.q_bias is not None:
            nn.init.zeros_(blk.attn.q_bias)
            nn.init.zeros_(blk.attn.v_bias)
        if sub_ln:
            _xavier_normal_rows(blk.attn.qkv.weight, 3)
            _xavier_normal_rows(blk.mlp.w12.weight, 2)
    proj = vit.patch_embed.proj.weight
    nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
    for param in (vit.pos_embed, vit.cls_token, student.mask_token):
        nn.init.trunc_normal_(param, std=0.02, a=-0.02, b=0.02)
    if sub_ln:
        scale = math.sqrt(math.log(2 * vit.depth))
        dim = vit.embed_dim
        for blk in vit.blocks:
            for param in (*blk.mlp.w12.parameters(), *blk.mlp.w3.parameters(), *blk.attn.proj.parameters()):
                param.mul_(scale)
            blk.attn.qkv.weight[2 * dim :].mul_(scale)  # the value projection
