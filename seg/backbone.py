"""The shared EVA-02 ViT as an mmseg backbone with a 4-scale feature pyramid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from backbone import CheckpointError, EVA02ViT, load_checkpoint
from backbone.presets import PRESETS
from backbone.pyramid import SimpleFeaturePyramid


@MODELS.register_module()
class EVA02(EVA02ViT, BaseModule):
    """EVA-02 ViT returning maps of strides 4, 8, 16, 32 from the blocks in ``out_indices``.

    Subclassing the shared ViT (instead of wrapping it) keeps the parameter names of the released
    segmentation model: ``backbone.blocks.<i>...``, ``backbone.pos_embed``, ``backbone.fpn1..4``.
    As released, block ``out_indices[k]`` feeds ``fpn{k+1}``: two 2x2 transposed convs with
    norm + GELU (stride 4), one transposed conv (stride 8), identity (16), 2x2 max-pool (32); every
    output keeps ``embed_dim`` channels. With patch 8 the scales are x2, x1, /2, /4.

    Any input size works: the ViT pads to a multiple of the patch size, so the maps have
    ``ceil(H / patch) * patch / stride`` rows (max-pool floors odd grids).

    ``pretrained`` names a checkpoint in any layout :func:`backbone.load_checkpoint` knows; it is
    loaded in :meth:`init_weights` (mmengine's runner calls it after building the model, which
    would overwrite weights loaded in ``__init__``). mmseg's own spelling,
    ``init_cfg=dict(type="Pretrained", checkpoint=...)``, means the same and goes through the same
    loader (mmengine's ``PretrainedInit`` would neither convert layouts nor resize); any other
    ``init_cfg`` is refused. ``pretrain_img_size`` defaults to ``img_size``
    so that the stored position embedding is resized once at load time, as the release did.
    """

    def __init__(
        self,
        arch: str = "eva02_base",
        img_size: int = 512,
        patch_size: int = 16,
        out_indices: Sequence[int] = (3, 5, 7, 11),
        drop_path_rate: float = 0.1,
        use_cls_token: bool = True,
        pretrain_img_size: int | None = None,
        window_size: int = 0,
        window_block_indexes: Sequence[int] = (),
        use_act_checkpoint: bool = False,
        compile_blocks: bool | dict = False,
        depth: int | None = None,
        norm_cfg: dict | None = None,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        if arch not in PRESETS:
            raise ValueError(f"EVA02 backbone: unknown arch {arch!r}; choose one of {sorted(PRESETS)}")
        if len(out_indices) != 4:
            raise ValueError(f"EVA02 backbone: out_indices needs 4 block indexes, got {list(out_indices)}")
        if patch_size not in (8, 16):
            raise ValueError(
                f"EVA02 backbone: patch_size must be 16 or 8 for strides 4..32, got {patch_size}"
            )
        preset = dict(PRESETS[arch])
        if depth is not None:
            preset["depth"] = depth
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            pretrain_img_size=pretrain_img_size or img_size,
            use_cls_token=use_cls_token,
            window_size=window_size,
            window_block_indexes=window_block_indexes,
            drop_path_rate=drop_path_rate,
            use_act_checkpoint=use_act_checkpoint,
            compile_blocks=compile_blocks,
            **preset,
        )
        bad = [i for i in out_indices if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"EVA02 backbone: out_indices {bad} out of range for depth {self.depth}")
        self.init_cfg = init_cfg
        self.out_indices = tuple(out_indices)
        self.pretrained = _pretrained_from(pretrained, init_cfg)
        norm_cfg = norm_cfg or dict(type="SyncBN", requires_grad=True)
        # The shared pyramid's stages, under the released names fpn1..fpn4.
        pyramid = SimpleFeaturePyramid(
            self.embed_dim,
            scale_factors=(4.0, 2.0, 1.0, 0.5) if patch_size == 16 else (2.0, 1.0, 0.5, 0.25),
            norm=lambda channels: build_norm_layer(norm_cfg, channels)[1],
        )
        self.fpn1, self.fpn2, self.fpn3, self.fpn4 = pyramid.stages
        # what a head must expect (checked by Mask2FormerEncoderDecoder against its pixel decoder)
        self.out_strides = tuple(round(patch_size / s) for s in pyramid.scale_factors)
        self.out_channels = tuple(pyramid.out_channels)

    def init_weights(self) -> None:
        """Random init of the ViT, then the pretrained checkpoint if one is configured."""
        EVA02ViT.init_weights(self)
        if "fpn1" not in self._modules:  # called by the ViT constructor, before the pyramid exists
            return
        if self.pretrained:
            self._load_pretrained(self.pretrained)
        self._is_init = True

    def _load_pretrained(self, path: str) -> None:
        report = load_checkpoint(self, path, strict=False)
        vit_missing = [k for k in report.missing if not k.startswith(("fpn1.", "fpn2.", "fpn3.", "fpn4."))]
        if vit_missing:
            raise CheckpointError(
                f"{path}: {len(vit_missing)} ViT tensors missing for EVA02 backbone, e.g. {vit_missing[:5]}"
            )
        print_log(report.summary(), logger="current")

    # Stages under the released names fpn1..fpn4, not mmseg's Feature2Pyramid, so that the released
    # segmentation checkpoints load by name.
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.forward_blocks(x, self.out_indices)
        return tuple(op(f.contiguous()) for op, f in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), feats))


def _pretrained_from(pretrained: str | None, init_cfg: dict | None) -> str | None:
    """The checkpoint named by ``pretrained`` or by ``init_cfg=dict(type="Pretrained", checkpoint=...)``."""
    if init_cfg is None:
        return pretrained
    if not isinstance(init_cfg, dict) or init_cfg.get("type") != "Pretrained":
        raise ValueError(
            f"EVA02 backbone: init_cfg {init_cfg!r} is not supported; the ViT has its own random init, "
            'and a checkpoint is given as init_cfg=dict(type="Pretrained", checkpoint=...) or pretrained=...'
        )
    unknown = sorted(set(init_cfg) - {"type", "checkpoint", "map_location"})
    if unknown or not init_cfg.get("checkpoint"):
        raise ValueError(
            f"EVA02 backbone: init_cfg {init_cfg!r}: only 'checkpoint' (required) and 'map_location' are "
            "supported (the checkpoint's prefix and layout are found by backbone.load_checkpoint)"
        )
    if pretrained and pretrained != init_cfg["checkpoint"]:
        raise ValueError(
            f"EVA02 backbone: pretrained={pretrained!r} and init_cfg checkpoint {init_cfg['checkpoint']!r} "
            "disagree; give one of them"
        )
    return init_cfg["checkpoint"]
