"""The masked-image-modeling student: an EVA-02 ViT with a mask token, a final LN and a linear head."""

from __future__ import annotations

import torch
from torch import nn

from backbone.vit import EVA02ViT


def _damp_patch_grad(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
    """Same forward value, one tenth of the gradient into the patch embedding."""
    return out.detach() * 0.9 + out * 0.1


class MIMStudent(nn.Module):
    """Predict teacher features at masked positions.

    Masked patch embeddings are replaced by a learnable ``mask_token`` before the
    position embedding is added; the output tokens go through a final LayerNorm and
    ``lm_head`` (to the teacher's feature width), on masked positions only, so the
    head never pays for the ~60% visible tokens.

    ``stop_grad_conv1`` scales the gradient reaching the patch embedding by 0.1, as
    in the released recipes (it keeps the early, large-gradient phase from
    destabilising the stem).
    """

    def __init__(self, vit: EVA02ViT, target_dim: int, stop_grad_conv1: bool = False) -> None:
        super().__init__()
        if vit.cls_token is None:
            raise ValueError("the pre-training student needs a ViT built with use_cls_token=True")
        if any(blk.window_size for blk in vit.blocks):
            raise ValueError("the pre-training student uses global attention only (no window blocks)")
        self.vit = vit
        self.stop_grad_conv1 = stop_grad_conv1
        if stop_grad_conv1:
            vit.patch_embed.proj.register_forward_hook(_damp_patch_grad)
        dim = vit.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.lm_head = nn.Linear(dim, target_dim)

    @property
    def grid(self) -> tuple[int, int]:
        return self.vit.grid

    def forward_features(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised patch tokens ``(B, N, C)`` of masked ``images``; ``mask`` is ``(B, N)`` bool."""
        vit = self.vit
        p = vit.patch_size
        if images.shape[-2] % p or images.shape[-1] % p:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of the patch size {p}")
        x = vit.forward_tokens(images, mask=mask, mask_token=self.mask_token)
        return self.norm(x[:, vit.num_prefix_tokens :])

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted teacher features of the masked tokens, ``(M, target_dim)`` in row-major mask order."""
        return self.lm_head(self.forward_features(images, mask)[mask])
