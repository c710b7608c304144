"""EVA-02 tiny Cascade Mask R-CNN on the synthetic toy set: the CPU demo and test configuration.

Same detector as the released configs, scaled down to train in minutes on two CPU cores: a
4-block, 192-wide ViT at 256 px (the 192 px pictures enlarged), a 64-channel pyramid and heads
without normalisation, fewer RoIs and proposals.
Data: ``$DETECTRON2_DATASETS/toy_coco`` (``python tools/make_toy_data.py``).
"""

from functools import partial

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator

from det.lazy_data import lsj_dataloader
from det.lr_decay import eva02_lr_factor

from ..common.cascade_mask_rcnn_eva02 import lr_multiplier, model, optimizer, test, train  # noqa: F401

SIZE = 256  # the 192 px toy pictures enlarged: shapes span more tokens of 16 px
CHANNELS = 64

model.backbone.net.img_size = SIZE
model.backbone.net.pretrain_img_size = SIZE
model.backbone.net.embed_dim = 192
model.backbone.net.depth = 4
model.backbone.net.num_heads = 3
model.backbone.net.sub_ln = False  # as the released eva02_tiny
model.backbone.net.window_size = 8
model.backbone.net.window_block_indexes = [0, 2]  # 1, 3 global
model.backbone.net.drop_path_rate = 0.0
model.backbone.out_channels = CHANNELS
model.backbone.square_pad = SIZE  # as in the released rows (0: pad to a multiple of 64 only)

model.proposal_generator.head.in_channels = CHANNELS
model.proposal_generator.anchor_generator = L(DefaultAnchorGenerator)(
    sizes=[[16], [32], [64], [128], [256]],
    aspect_ratios=[0.5, 1.0, 2.0],
    strides=[4, 8, 16, 32, 64],
    offset=0.0,
)
model.proposal_generator.pre_nms_topk = (1000, 500)
model.proposal_generator.post_nms_topk = (300, 100)

model.roi_heads.num_classes = 5  # the five shapes of tools/make_toy_data.py
# 16 sampled RoIs per image, not 32: the box and mask heads dominate a CPU step (1.48 s/it instead of
# 1.83 at one thread) and the toy pictures hold a handful of objects (500 iterations: 80.9 box AP).
model.roi_heads.batch_size_per_image = 16
for _head in model.roi_heads.box_heads:
    _head.input_shape = ShapeSpec(channels=CHANNELS, height=7, width=7)
    _head.conv_dims = [CHANNELS] * 4
    _head.fc_dims = [256]
for _predictor in model.roi_heads.box_predictors:
    _predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=CHANNELS, width=14, height=14)
model.roi_heads.mask_head.conv_dims = [CHANNELS] * 4
# Trained from scratch, the heads learn far faster without normalisation: with the released LN
# heads the toy detector reached 5.3 box AP after 200 iterations at 320 px, without them 18.6
# (the toy segmenter shows the same with BN or GN in the UperNet head).
for _head in model.roi_heads.box_heads:
    _head.conv_norm = ""
model.roi_heads.mask_head.conv_norm = ""

# No scale jitter: the toy shapes keep one scale range, and in a schedule this short jitter costs
# more than it brings (400 iterations, box AP on toy val: LSJ 0.5-1.5 73.0, 0.8-1.25 75.8, none 78.1).
dataloader = lsj_dataloader(
    SIZE, "toy_coco_train", "toy_coco_val", total_batch_size=4, num_workers=1, min_scale=1.0, max_scale=1.0
)

# 500 iterations (about 13 minutes at one thread, with 5 evaluations) reach 80.9 box / 72.8 mask AP
# on toy val (35.7 / 44.0 after 200, 72.3 / 66.9 after 400): `make demo`.
train.output_dir = "./output/toy_det"
train.max_iter = 500
train.eval_period = train.max_iter
train.checkpointer.period = train.max_iter
train.log_period = 20
train.seed = 0

optimizer.lr = 6e-4
optimizer.weight_decay = 0.05
# no layer-wise decay: the toy backbone starts from random weights (the chain's fine-tuning from a
# pre-trained one keeps the same schedule, so that the two runs compare)
optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=1.0, num_layers=4)

lr_multiplier.scheduler.milestones = [train.max_iter * 8 // 10, train.max_iter * 9 // 10]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = 32 / train.max_iter

test.aug.min_sizes = [192, 224, 256]  # views fit the 256 square
test.aug.max_size = SIZE
