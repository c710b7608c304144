"""The EVA-02 vision transformer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .block import Block
from .pos_embed import interpolate_pos_grid
from .rope import rope_table, signed_sin

PositionRule = Literal["fixed", "stretch"]


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _at_least(size: int | torch.Tensor, minimum: int) -> int | torch.Tensor:
    """``max`` that stays symbolic under ``torch.export`` (sizes are tensors under jit tracing)."""
    return max(size, minimum) if isinstance(size, torch.Tensor) else torch.sym_max(size, minimum)


class EVA02ViT(nn.Module):
    """Plain ViT with SwiGLU, optional sub-LN, 2D RoPE and window/global attention.

    ``inner_attn_norm`` adds the LayerNorm that the EVA-02-CLIP vision towers
    have inside attention, before the output projection.

    Geometry:
      * ``img_size`` is the configured input size. Inputs of any size work:
        they are zero-padded to a multiple of the patch size.
      * The absolute position embedding is stored on the grid of
        ``pretrain_img_size / patch_size`` and resized at run time.
      * ``position_rule`` decides how positions follow the input size.
        ``"fixed"`` (default) keeps the spacing of the configured size: the
        position embedding is resized to the configured grid and cropped to
        the input (as if the input were padded to ``img_size``, which is what
        the released detectors did), RoPE positions advance by
        ``rope_ref_grid / configured grid`` per token. Inputs larger than
        ``img_size`` stretch the position embedding to their own grid.
        ``"stretch"`` maps every input onto the reference grid, as timm's
        ``dynamic_img_size`` does; equal to timm at other sizes only with
        ``pos_embed_antialias=True`` (timm resamples with antialiasing, a
        different bicubic filter even when enlarging). Both rules equal the
        released model at ``img_size``.
      * Window blocks use windows of ``window_size`` tokens (grid padded with
        zeros) with RoPE of that window, positions advancing by
        ``rope_ref_grid / window_size``, as released.

    ``compile_blocks`` compiles each block with ``torch.compile`` (regional); a dict gives
    ``torch.compile`` options, e.g. ``{"mode": "max-autotune"}``.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 14,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4 * 2 / 3,
        sub_ln: bool = True,
        inner_attn_norm: bool = False,
        use_cls_token: bool = True,
        pretrain_img_size: int | None = None,
        rope_ref_grid: int = 16,
        rope_theta: float = 10000.0,
        position_rule: PositionRule = "fixed",
        pos_embed_antialias: bool = False,
        window_size: int = 0,
        window_block_indexes: Sequence[int] = (),
        residual_block_indexes: Sequence[int] = (),
        drop_path_rate: float = 0.0,
        use_act_checkpoint: bool = False,
        norm_eps: float = 1e-6,
        attn_impl: str = "sdpa",
        compile_blocks: bool | dict = False,
    ) -> None:
        super().__init__()
        if window_block_indexes and window_size <= 0:
            raise ValueError("window_block_indexes given but window_size is 0")
        if window_block_indexes and use_cls_token:
            raise ValueError("window attention needs use_cls_token=False (a cls token has no window)")
        if position_rule not in ("fixed", "stretch"):
            raise ValueError(f"position_rule must be 'fixed' or 'stretch', got {position_rule!r}")
        bad = [i for i in (*window_block_indexes, *residual_block_indexes) if not 0 <= i < depth]
        if bad:
            raise ValueError(f"block indexes {bad} out of range for depth {depth}")
        self.img_size = _pair(img_size)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.inner_attn_norm = inner_attn_norm
        self.num_prefix_tokens = 1 if use_cls_token else 0
        self.grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        pretrain = _pair(pretrain_img_size or self.img_size)
        self.pos_grid = (pretrain[0] // patch_size, pretrain[1] // patch_size)
        self.rope_ref_grid = rope_ref_grid
        self.rope_theta = rope_theta
        self.position_rule = position_rule
        self.pos_embed_antialias = pos_embed_antialias
        self.use_act_checkpoint = use_act_checkpoint

        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if use_cls_token else None
        num_pos = self.num_prefix_tokens + self.pos_grid[0] * self.pos_grid[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim))

        drop_rates = torch.linspace(0, drop_path_rate, depth).tolist()
        window_set, residual_set = set(window_block_indexes), set(residual_block_indexes)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_hidden_dim=int(embed_dim * mlp_ratio),
                sub_ln=sub_ln,
                window_size=window_size if i in window_set else 0,
                drop_path=drop_rates[i],
                norm_eps=norm_eps,
                attn_impl=attn_impl,
                residual_conv=i in residual_set,
                inner_attn_norm=inner_attn_norm,
            )
            for i in range(depth)
        )
        self.init_weights()
        if compile_blocks:
            # Regional compilation: every block is compiled on its own with dynamic shapes, so a
            # new input size or window count reuses the compiled code instead of recompiling the
            # whole model; parameter names and checkpoints are unchanged.
            options = {"dynamic": True, **(compile_blocks if isinstance(compile_blocks, dict) else {})}
            for blk in self.blocks:
                blk.compile(**options)

    def init_weights(self) -> None:
        """BEiT-style random init (truncated normal 0.02, output projections scaled by depth)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        with torch.no_grad():
            for i, blk in enumerate(self.blocks):
                blk.attn.proj.weight.div_(math.sqrt(2.0 * (i + 1)))
                blk.mlp.w3.weight.div_(math.sqrt(2.0 * (i + 1)))

    # ----------------------------------------------------------------- positions
    def _pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        prefix = self.pos_embed[:, : self.num_prefix_tokens]
        tokens = self.pos_embed[:, self.num_prefix_tokens :]
        # Always interpolate and crop (no same-size shortcuts, no max on sizes): an exported
        # graph then follows the runtime grid; eager results are the same bit for bit.
        if self.position_rule == "stretch":
            tokens = interpolate_pos_grid(tokens, self.pos_grid, grid, self.pos_embed_antialias)
        else:
            target = (_at_least(grid[0], self.grid[0]), _at_least(grid[1], self.grid[1]))
            tokens = interpolate_pos_grid(tokens, self.pos_grid, target, self.pos_embed_antialias)
            c = tokens.shape[-1]
            tokens = tokens.view(1, target[0], target[1], c)[:, : grid[0], : grid[1]].reshape(1, -1, c)
        return torch.cat((prefix, tokens), dim=1) if self.num_prefix_tokens else tokens

    def _rope_tables(self, grid: tuple[int, int], device: torch.device) -> dict[int, tuple]:
        """RoPE ``(cos, signed sin)`` per attention extent: key 0 for global blocks, else the window size."""
        head_dim = self.embed_dim // self.num_heads
        ref = self.rope_ref_grid
        tables = {}
        for win in {blk.window_size for blk in self.blocks}:
            if win:
                spacing, extent, prefix = (ref / win, ref / win), (win, win), 0
            else:
                basis = grid if self.position_rule == "stretch" else self.grid
                spacing, extent, prefix = (ref / basis[0], ref / basis[1]), grid, self.num_prefix_tokens
            cos, sin = rope_table(extent, spacing, head_dim, prefix, self.rope_theta, device)
            tables[win] = (cos, signed_sin(sin))
        return tables

    # ------------------------------------------------------------------- forward
    def _embed(
        self, x: torch.Tensor, mask: torch.Tensor | None, mask_token: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        p = self.patch_size
        # padding by zero is a no-op; no branch, so that exported graphs keep the size symbolic
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
        x = self.patch_embed.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        if mask is not None:
            if mask.shape != x.shape[:2]:
                raise ValueError(f"mask shape {tuple(mask.shape)} != (batch, patches) {tuple(x.shape[:2])}")
            x = torch.where(mask.unsqueeze(-1), mask_token.to(x.dtype), x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x + self._pos_embed_for(grid), grid

    def _run_blocks(
        self,
        x: torch.Tensor,
        stop_after: int | None = None,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ):
        """Yield (index, tokens, grid) after each block."""
        x, grid = self._embed(x, mask, mask_token)
        ropes = self._rope_tables(grid, x.device)
        for i, blk in enumerate(self.blocks):
            rope = ropes[blk.window_size]
            if self.use_act_checkpoint and self.training:
                x = checkpoint(blk, x, grid, rope, use_reentrant=False)
            else:
                x = blk(x, grid, rope)
            yield i, x, grid
            if stop_after is not None and i >= stop_after:
                return

    def _to_map(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x[:, self.num_prefix_tokens :]
        return x.transpose(1, 2).reshape(x.shape[0], self.embed_dim, grid[0], grid[1])

    def forward_tokens(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tokens after the last block: (B, [1 +] N, C).

        ``mask`` (B, N) bool replaces those patch embeddings by ``mask_token``
        (1, 1, C) before positions are added, for masked image modeling.
        """
        tokens = x
        for _, tokens, _ in self._run_blocks(x, mask=mask, mask_token=mask_token):  # noqa: B007 (the last one is the result)
            pass
        return tokens

    def forward_blocks(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps (B, C, h, w) after each block in ``indices`` (0-based), in that order."""
        wanted = sorted(set(indices))
        if not wanted or wanted[0] < 0 or wanted[-1] >= self.depth:
            raise ValueError(f"block indexes {list(indices)} out of range for depth {self.depth}")
        maps = {}
        for i, tokens, grid in self._run_blocks(x, stop_after=wanted[-1]):
            if i in wanted:
                maps[i] = self._to_map(tokens, grid)
        return [maps[i] for i in indices]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stride-``patch_size`` map of the last block: ``{"last_feat": (B, C, h, w)}``."""
        return {"last_feat": self.forward_blocks(x, [self.depth - 1])[0]}
