"""Every detection config builds (depth reduced) and runs a training and an inference step;
the layer-wise lr decay is exactly the released rule."""

import copy
from functools import partial
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetMapper
from detectron2.data.datasets import load_coco_json
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.utils.events import EventStorage

import det  # noqa: F401
import toydata
from det.lr_decay import eva02_lr_factor

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = sorted(p for p in (ROOT / "configs/det").rglob("*.py") if p.parent.name != "common")
TOY = ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toydata.generate(out, num_train=2, num_val=1, num_test=1, size=64, max_objects=2, seed=1)
    dicts = load_coco_json(
        str(out / "toy_coco/annotations/instances_train.json"),
        str(out / "toy_coco/train"),
        dataset_name="test_det_models_toy",
    )  # contiguous class ids
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB", use_instance_mask=True)
    return [mapper(copy.deepcopy(d)) for d in dicts]


def _small(cfg):
    net = cfg.model.backbone.net
    net.depth = 2
    net.window_block_indexes = [0]
    cfg.model.backbone.square_pad = 128  # still padded to a square, not to the row's 1024 / 1536
    # Random LVIS heads put tens of thousands of (box, class) pairs above 0.02; the soft-NMS rows
    # keep them all (as released), and the mask head on all of them would need gigabytes.
    cfg.model.roi_heads.test_topk_per_image = 100
    cfg.model.proposal_generator.pre_nms_topk = (100, 100)
    cfg.model.proposal_generator.post_nms_topk = (50, 50)
    cfg.model.roi_heads.batch_size_per_image = 16
    cfg.optimizer.params.lr_factor_func.keywords["num_layers"] = 2
    return cfg


def test_all_release_rows_present():
    names = {p.name for p in CONFIGS}
    for row in (
        "coco/eva02_coco_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7.py",
        "coco/eva02_coco_cascade_mask_rcnn_vitdet_l_4attn_1024_lrd0p8.py",
        "coco/eva02_coco_cascade_mask_rcnn_vitdet_b_6attn_win32_1536_lrd0p7.py",
        "coco/eva02_coco_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8.py",
        "lvis/eva02_lvis_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7.py",
        "lvis/eva02_lvis_cascade_mask_rcnn_vitdet_l_4attn_1024_lrd0p8.py",
        "lvis/eva02_lvis_cascade_mask_rcnn_vitdet_l_8attn_win32_1536_lrd0p8.py",
        "o365/eva02_o365_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8.py",
        "o365_to_coco/eva02_o365_to_coco_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8.py",
        "o365_to_lvis/eva02_o365_to_lvis_cascade_mask_rcnn_vitdet_l_8attn_1536_lrd0p8.py",
    ):
        assert Path(row).name in names, row


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_has_every_section(path):
    cfg = LazyConfig.load(str(path))
    assert set(cfg) == {"dataloader", "lr_multiplier", "model", "optimizer", "test", "train"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_trains_and_infers(path, batch):
    cfg = _small(LazyConfig.load(str(path)))
    model = instantiate(cfg.model)
    heads = model.roi_heads
    k = cfg.model.roi_heads.num_classes
    # The class count, set once, reaches all three cascade predictors and the mask head.
    assert heads.num_cascade_stages == 3
    for predictor in heads.box_predictor:
        assert predictor.num_classes == k and predictor.cls_score.out_features == k + 1
        assert predictor.bbox_pred.out_features == 4  # class-agnostic regression
    if heads.mask_on:
        assert heads.mask_head.predictor.out_channels == k
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    model.train()
    with EventStorage(0):
        losses = model(copy.deepcopy(batch))
        total = sum(losses.values())
        assert torch.isfinite(total)
        assert ("loss_mask" in losses) == heads.mask_on
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"], "height": 64, "width": 64}])[0]["instances"]
    assert out.image_size == (64, 64)
    assert out.has("pred_masks") == heads.mask_on
    if len(out):
        assert bool((out.scores[:-1] >= out.scores[1:]).all())


def test_lr_decay_is_the_released_rule():
    cfg = LazyConfig.load(str(TOY))
    model = instantiate(cfg.model)
    depth = cfg.model.backbone.net.depth
    # the toy config trains from random weights without decay; the rule itself at a released rate
    assert cfg.optimizer.params.lr_factor_func.keywords == {"lr_decay_rate": 1.0, "num_layers": depth}
    decay = 0.9
    cfg.optimizer.params.lr_factor_func = partial(eva02_lr_factor, lr_decay_rate=decay, num_layers=depth)
    factor = cfg.optimizer.params.lr_factor_func
    for name, _ in model.named_parameters():
        # Independent reference: detectron2's ViTDet rule.
        assert factor(name) == pytest.approx(get_vit_lr_decay_rate(name, decay, depth)), name
    expected = {
        "backbone.net.pos_embed": decay ** (depth + 1),
        "backbone.net.patch_embed.proj.weight": decay ** (depth + 1),
        "backbone.net.blocks.0.attn.qkv.weight": decay**depth,
        f"backbone.net.blocks.{depth - 1}.mlp.w3.weight": decay,
        "backbone.simfp_2.0.weight": 1.0,
        "roi_heads.box_predictor.2.cls_score.weight": 1.0,
    }
    for name, value in expected.items():
        assert factor(name) == pytest.approx(value), name
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    for name, value in expected.items():
        assert lr_of[id(params[name])] == pytest.approx(cfg.optimizer.lr * value), name


def test_init_from_pretrained_vit_and_from_detector(tmp_path):
    from backbone import build_backbone
    from det.engine import load_weights

    cfg = _small(LazyConfig.load(str(TOY)))
    model = instantiate(cfg.model)
    # A pre-training checkpoint: 224 px, patch 14, cls token, wrapped in "model".
    vit = build_backbone("eva02_tiny", depth=2)
    torch.save({"model": vit.state_dict()}, tmp_path / "pt.pth")
    load_weights(model, str(tmp_path / "pt.pth"))
    net = model.backbone.net
    assert torch.equal(net.blocks[1].mlp.w3.weight, vit.blocks[1].mlp.w3.weight)
    assert torch.equal(net.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert net.patch_embed.proj.weight.shape[-1] == 16  # kernel resized 14 -> 16
    # A detector checkpoint restores every tensor, heads included.
    torch.save({"model": model.state_dict()}, tmp_path / "det.pth")
    other = instantiate(cfg.model)
    load_weights(other, str(tmp_path / "det.pth"))
    theirs = other.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(theirs[k], v), k
