"""detectron2 ``Backbone`` view of the shared EVA-02 ViT."""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

from backbone import EVA02ViT


class EVA02Net(EVA02ViT, Backbone):
    """The EVA-02 ViT as a detectron2 backbone with one stride-``patch_size`` output.

    Subclassing (not wrapping) keeps parameter names as ``backbone.net.blocks.<i>...``, the
    names detectron2's ViTDet layer-decay rule and the released checkpoints use. Feed it to
    detectron2's own ``SimpleFeaturePyramid`` for p2..p6.
    """

    def __init__(self, *, out_feature: str = "last_feat", **vit_kwargs) -> None:
        vit_kwargs.setdefault("use_cls_token", False)
        super().__init__(**vit_kwargs)
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: self.embed_dim}
        self._out_feature_strides = {out_feature: self.patch_size}

    def forward(self, x):
        return {self._out_features[0]: self.forward_blocks(x, [self.depth - 1])[0]}

    def output_shape(self) -> dict[str, ShapeSpec]:
        name = self._out_features[0]
        return {name: ShapeSpec(channels=self.embed_dim, stride=self.patch_size)}
