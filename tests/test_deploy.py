"""ONNX export: branch-free geometry is exact in eager mode, exported graphs match eager at new sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import torchvision

import backbone.block
from backbone import EVA02ViT, build_backbone
from backbone.pos_embed import resize_pos_grid
from deploy import BackboneGraph, DetectorGraph, ExportError, check_onnx, detector_instances, export_graph
from deploy.build import build_graph
from deploy.check import check_detector, match_detections, onnx_session, same_decisions
from deploy.onnx_export import op_types
from deploy.ops import batched_nms, custom_translations
from deploy.postprocess import graph_instances

# ------------------------------------------------- the rewrites leave eager outputs bit for bit unchanged


def _pos_embed_with_shortcuts(model: EVA02ViT, grid: tuple[int, int]) -> torch.Tensor:
    """The position embedding as computed before the branch-free rewrite (same-size shortcuts)."""
    prefix = model.pos_embed[:, : model.num_prefix_tokens]
    tokens = model.pos_embed[:, model.num_prefix_tokens :]
    if model.position_rule == "stretch":
        tokens = resize_pos_grid(tokens, model.pos_grid, grid, model.pos_embed_antialias)
    else:
        target = (max(grid[0], model.grid[0]), max(grid[1], model.grid[1]))
        tokens = resize_pos_grid(tokens, model.pos_grid, target, model.pos_embed_antialias)
        if target != grid:
            c = tokens.shape[-1]
            tokens = tokens.view(1, *target, c)[:, : grid[0], : grid[1]].reshape(1, -1, c)
    return torch.cat((prefix, tokens), dim=1) if model.num_prefix_tokens else tokens


def _window_partition_pad_if_needed(x: torch.Tensor, window: int):
    """Window partition as before the rewrite: pad only when the grid is not a multiple."""
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c), (hp, wp)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(use_cls_token=True),  # position embedding at its own grid: the old code skipped the resize
        dict(use_cls_token=False, window_size=4, window_block_indexes=(0,)),
        dict(use_cls_token=False, pretrain_img_size=96, window_size=5, window_block_indexes=(1,)),
        dict(use_cls_token=True, position_rule="stretch", pos_embed_antialias=True),
    ],
)
def test_branch_free_geometry_is_bit_identical_to_the_shortcuts(monkeypatch, kwargs):
    model = build_backbone("eva02_tiny", img_size=128, patch_size=16, depth=2, **kwargs).eval()
    images = [torch.randn(1, 3, *hw) for hw in [(128, 128), (64, 96), (160, 128), (50, 70)]]
    with torch.no_grad():
        new = [model(x)["last_feat"] for x in images]
        monkeypatch.setattr(EVA02ViT, "_pos_embed_for", _pos_embed_with_shortcuts)
        monkeypatch.setattr(backbone.block, "window_partition", _window_partition_pad_if_needed)
        old = [model(x)["last_feat"] for x in images]
    for a, b in zip(new, old):
        assert torch.equal(a, b)


def test_branch_free_geometry_leaves_gradients_bit_identical(monkeypatch):
    model = build_backbone(
        "eva02_tiny",
        img_size=96,
        patch_size=16,
        depth=2,
        use_cls_token=False,
        window_size=4,
        window_block_indexes=(0,),
    )
    x = torch.randn(2, 3, 96, 96)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(x)["last_feat"].square().sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    new = grads()
    monkeypatch.setattr(EVA02ViT, "_pos_embed_for", _pos_embed_with_shortcuts)
    monkeypatch.setattr(backbone.block, "window_partition", _window_partition_pad_if_needed)
    old = grads()
    assert all(torch.equal(new[k], old[k]) for k in new)


def test_pos_embed_at_its_own_grid_is_the_stored_tensor():
    """Hand check of the exactness argument: bicubic weights at scale 1 are exactly (0, 1, 0, 0)."""
    model = build_backbone("eva02_tiny", img_size=96, patch_size=16, depth=1, use_cls_token=False)
    with torch.no_grad():
        assert torch.equal(model._pos_embed_for((6, 6)), model.pos_embed)
        cropped = model.pos_embed.view(1, 6, 6, -1)[:, :4, :5].reshape(1, 20, -1)
        assert torch.equal(model._pos_embed_for((4, 5)), cropped)


# ------------------------------------------------------------------------------- exported graphs


def _assert_plain_onnx(path) -> None:
    onnx.checker.check_model(str(path), full_check=True)
    ops = op_types(path)
    assert not [op for op in ops if "::" in op], ops  # standard domain only: no custom ops
    assert not {"DFT", "STFT"} & set(ops)  # no complex arithmetic
    return ops


@pytest.fixture(scope="module")
def tiny_backbone_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = build_backbone(
        "eva02_tiny",
        img_size=64,
        patch_size=16,
        depth=3,
        use_cls_token=False,
        window_size=3,
        window_block_indexes=(0, 1),
    ).eval()
    graph = BackboneGraph(net)
    path = export_graph(graph, torch.randn(1, 3, 64, 64), tmp_path_factory.mktemp("onnx") / "bb.onnx")
    return graph, path


def test_backbone_onnx_matches_eager_at_unseen_sizes(tiny_backbone_onnx):
    graph, path = tiny_backbone_onnx
    ops = _assert_plain_onnx(path)
    assert {"Resize", "Cos", "Sin", "Pad"} <= set(ops)  # position embedding and RoPE in the graph
    # sizes never traced: smaller and larger than the configured grid, not multiples of the patch
    # or of the window, batch 2
    gen = torch.Generator().manual_seed(1)
    sizes = [(2, 37, 50), (1, 129, 64), (1, 96, 200)]
    samples = [torch.randn(b, 3, h, w, generator=gen) for b, h, w in sizes]
    results = check_onnx(path, graph, samples)
    for res in results:
        assert res.same_count, res
        assert res.rel_error < 1e-4, res
    # the contract's shape: (N, C, ceil(H / p), ceil(W / p))
    assert results[0].shape == (2, 3, 37, 50)
    with torch.no_grad():
        assert graph(samples[0])[0].shape == (2, 192, 3, 4)


def test_torch_export_program_follows_the_input_size(tmp_path):
    net = build_backbone("eva02_tiny", img_size=32, patch_size=16, depth=1, use_cls_token=True).eval()
    graph = BackboneGraph(net)
    path = export_graph(graph, torch.randn(2, 3, 32, 32), tmp_path / "bb.pt2", fmt="torch-export")
    program = torch.export.load(str(path)).module()
    x = torch.randn(3, 3, 45, 70)  # another batch, a grid larger than the configured one
    with torch.no_grad():
        torch.testing.assert_close(program(x)[0], net(x)["last_feat"], rtol=1e-5, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["bb.pt2"]


def test_failed_export_leaves_no_file(tmp_path):
    net = build_backbone("eva02_tiny", img_size=32, patch_size=16, depth=1, use_cls_token=False)
    out = tmp_path / "bb.onnx"
    with pytest.raises(ExportError, match="opset 18"):
        export_graph(BackboneGraph(net), torch.randn(1, 3, 32, 32), out, opset=17)
    with pytest.raises(ExportError, match="unknown"):
        export_graph(BackboneGraph(net), torch.randn(1, 3, 32, 32), out, fmt="tflite")
    with pytest.raises(ExportError, match="does not exist"):
        export_graph(BackboneGraph(net), torch.randn(1, 3, 32, 32), tmp_path / "no" / "bb.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_weights_and_overrides_are_named(tmp_path):
    small = build_backbone("eva02_small", img_size=32, patch_size=16, depth=1)
    ckpt = tmp_path / "small.pth"
    torch.save(small.state_dict(), ckpt)
    with pytest.raises(ExportError, match="small.pth does not fit backbone eva02_tiny"):
        build_graph(None, "eva02_tiny", ["img_size=32", "patch_size=16", "depth=1"], str(ckpt))
    with pytest.raises(ExportError, match="window_block_indexes"):
        build_graph(None, "eva02_tiny", ["window_block_indexes=[0]"], None)
    with pytest.raises(ExportError, match="no such file"):
        build_graph(None, "eva02_tiny", [], str(tmp_path / "missing.pth"))


# ---------------------------------------------------------------------------------------- segmenter

TOY_SEG = "configs/seg/toy/upernet_eva02_tiny_toy.py"
TOY_SEG_SMALL = ["model.backbone.depth=2", "model.backbone.out_indices=(0,0,1,1)"]


def _mmseg_whole_inference(model, rgb: torch.Tensor) -> torch.Tensor:
    """mmseg's own path: data preprocessor on the BGR image as loaded, then whole-image inference."""
    from mmseg.structures import SegDataSample

    h, w = rgb.shape[-2:]
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    data = model.data_preprocessor(dict(inputs=[rgb[0].flip(0)], data_samples=[sample]), False)
    with torch.no_grad():
        return model.inference(data["inputs"], [s.metainfo for s in data["data_samples"]])


def test_segmenter_onnx_matches_mmseg_whole_inference(tmp_path):
    torch.manual_seed(0)
    kind, graph = build_graph(TOY_SEG, None, TOY_SEG_SMALL, None)
    assert kind == "seg"
    path = export_graph(graph, torch.rand(1, 3, 128, 128) * 255, tmp_path / "seg.onnx")
    ops = _assert_plain_onnx(path)
    assert "GatherND" not in ops  # pyramid pooling follows the runtime size
    gen = torch.Generator().manual_seed(2)
    samples = [torch.rand(1, 3, h, w, generator=gen).mul(255).round() for h, w in [(115, 149), (70, 66)]]
    session = onnx_session(path)
    for rgb in samples:
        reference = _mmseg_whole_inference(graph.segmentor, rgb)
        logits = session.run(None, {"image": rgb.numpy()})[0]
        assert logits.shape == tuple(reference.shape) == (1, 6, *rgb.shape[-2:])
        ref = reference.numpy()
        err = float(abs(logits - ref).max())
        assert err / abs(ref).max() < 1e-3
        assert same_decisions(ref, logits, 1, err)
        # near-ties of the untrained heads aside, the argmax is the same pixel for pixel
        assert (ref.argmax(1) == logits.argmax(1)).mean() > 0.999


# ----------------------------------------------------------------------------------------- detector

TOY_DET = "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"
TOY_DET_SMALL = ["model.backbone.net.depth=2", "model.backbone.net.window_block_indexes=[0]"]


def test_detector_pyramid_onnx_gives_the_eager_detections(tmp_path):
    torch.manual_seed(0)
    kind, graph = build_graph(TOY_DET, None, TOY_DET_SMALL, None, detector_part="pyramid")
    assert kind == "det" and graph.output_names == ("p2", "p3", "p4", "p5", "p6")
    path = export_graph(graph, torch.rand(3, 160, 128) * 255, tmp_path / "det.onnx")
    _assert_plain_onnx(path)
    gen = torch.Generator().manual_seed(3)
    # sizes never traced, below the 256 square the toy detector pads to
    samples = [torch.rand(3, h, w, generator=gen).mul(255).round() for h, w in [(120, 176), (64, 80)]]
    for res in check_onnx(path, graph, samples):
        assert res.same_count and res.rel_error < 1e-4, res
    for res in check_detector(path, graph, samples):  # heads in PyTorch, against model([...])
        assert res.eager_count == res.onnx_count == res.matched > 0, res
        assert res.max_box_error < 1e-3 and res.max_score_error < 1e-3, res
    model = graph.model
    for x in samples:
        h, w = x.shape[-2:]
        with torch.no_grad():  # eager reference at another output size: boxes and masks are rescaled
            ref = model([{"image": x, "height": 2 * h, "width": 2 * w}])[0]["instances"]
        features = onnx_session(path).run(None, {"image": x.numpy()})
        got = detector_instances(model, features, (h, w), (2 * h, 2 * w))
        assert len(ref) == len(got) > 0
        assert torch.equal(ref.pred_classes, got.pred_classes)
        torch.testing.assert_close(got.pred_boxes.tensor, ref.pred_boxes.tensor, atol=1e-3, rtol=0)
        torch.testing.assert_close(got.scores, ref.scores, atol=1e-3, rtol=0)
        assert got.pred_masks.shape == (len(ref), 2 * h, 2 * w)
        assert (got.pred_masks != ref.pred_masks).float().mean() < 1e-4


# ------------------------------------------------------------- NMS and RoIAlign in onnxruntime


class _NMS(torch.nn.Module):
    def __init__(self, iou: float, score: float) -> None:
        super().__init__()
        self.iou, self.score = iou, score

    def forward(self, boxes, scores, groups):
        return batched_nms(boxes, scores, groups, self.iou, self.score)


def _export_small(module, args, names, dynamic, path):
    program = torch.onnx.export(
        module.eval(),
        args,
        dynamo=True,
        input_names=names,
        dynamic_shapes=dynamic,
        opset_version=18,
        custom_translation_table=custom_translations(),
    )
    onnx.checker.check_model(program.model_proto, full_check=True)
    program.save(str(path))
    return onnx_session(path)


def test_batched_nms_translation_keeps_what_torchvision_keeps(tmp_path):
    # hand-made overlaps with the 0.5 threshold: B covers 80% of A (suppressed), C overlaps A by
    # 1/3 (kept), E overlaps A by exactly 0.5 (kept: suppression needs IoU > threshold), F is A
    # in another group (kept), G scores exactly the threshold 0.1 (dropped: candidates need >),
    # H scores -inf (dropped), I is empty (area 0: never suppresses, kept)
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # A
            [0, 0, 10, 8],  # B
            [5, 0, 15, 10],  # C
            [0, 0, 10, 5],  # E
            [0, 0, 10, 10],  # F
            [50, 50, 60, 60],  # G
            [70, 70, 80, 80],  # H
            [30, 30, 30, 40],  # I
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.1, float("-inf"), 0.3])
    groups = torch.tensor([0, 0, 0, 0, 1, 0, 0, 2])
    module = _NMS(0.5, 0.1)
    from torch.export import Dim

    n = Dim("n", min=2, max=10000)
    dynamic = {"boxes": {0: n}, "scores": {0: n}, "groups": {0: n}}
    session = _export_small(
        module, (boxes, scores, groups), ["boxes", "scores", "groups"], dynamic, tmp_path / "nms.onnx"
    )
    assert "NonMaxSuppression" in op_types(tmp_path / "nms.onnx")
    expected = [0, 2, 3, 4, 7]  # by decreasing score: A, C, E, F, I
    candidates = torch.nonzero(scores > 0.1).flatten()
    reference = candidates[
        torchvision.ops.batched_nms(boxes[candidates], scores[candidates], groups[candidates], 0.5)
    ]
    assert reference.tolist() == expected
    assert batched_nms(boxes, scores, groups, 0.5, 0.1).tolist() == expected
    feed = {"boxes": boxes.numpy(), "scores": scores.numpy(), "groups": groups.numpy()}
    assert session.run(None, feed)[0].tolist() == expected
    # random boxes in 7 groups, another count than traced: the same kept set and order
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=gen) * 100
    boxes = torch.cat((xy, xy + 5 + torch.rand(300, 2, generator=gen) * 40), dim=1)
    scores = torch.rand(300, generator=gen)
    groups = torch.randint(0, 7, (300,), generator=gen)
    candidates = torch.nonzero(scores > 0.1).flatten()
    reference = candidates[
        torchvision.ops.batched_nms(boxes[candidates], scores[candidates], groups[candidates], 0.5)
    ]
    got = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy(), "groups": groups.numpy()})[0]
    assert 20 < len(reference) < len(candidates)
    assert got.tolist() == reference.tolist()


class _RoIAlign(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from detectron2.layers import ROIAlign

        self.align = ROIAlign((7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)

    def forward(self, x, rois):
        return self.align(x, rois)


def test_roi_align_translation_matches_torchvision(tmp_path):
    from torch.export import Dim

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 20, 24, generator=gen)
    rois = torch.tensor(
        [
            [0, 8.0, 8.0, 40.0, 36.0],  # inside
            [0, -10.0, -6.0, 30.0, 20.0],  # partly outside, top left
            [0, 80.0, 60.0, 120.0, 100.0],  # partly outside, bottom right
            [0, 33.3, 17.7, 33.9, 18.1],  # smaller than a feature cell: one sample per bin
            [0, 0.0, 0.0, 96.0, 80.0],  # the whole image: 2 x 3 samples per bin (adaptive)
        ]
    )
    dynamic = {
        "x": {2: Dim("h", min=4, max=512), 3: Dim("w", min=4, max=512)},
        "rois": {0: Dim("r", min=2, max=10000)},
    }
    session = _export_small(_RoIAlign(), (x, rois), ["x", "rois"], dynamic, tmp_path / "roi.onnx")
    assert "RoiAlign" in op_types(tmp_path / "roi.onnx")
    for feature, boxes in [(x, rois), (torch.randn(1, 3, 31, 17, generator=gen), rois[:3])]:
        expected = torchvision.ops.roi_align(feature, boxes, (7, 7), 0.25, 0, aligned=True)
        got = session.run(None, {"x": feature.numpy(), "rois": boxes.numpy()})[0]
        assert np.abs(got - expected.numpy()).max() < 1e-5


# ------------------------------------------------------------------------------- whole detector


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["model.roi_heads.maskness_thresh=0.5"],
        ["model.roi_heads.override_score_thresh=0.1", "model.roi_heads.test_topk_per_image=20"],
    ],
)
def test_detector_graph_in_pytorch_is_detectron2_inference(options):
    """The branch-free rewrite gives detectron2's own inference bit for bit (before any export)."""
    torch.manual_seed(0)
    _, graph = build_graph(TOY_DET, None, TOY_DET_SMALL + options, None)
    x = torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(4)).mul(255).round()
    with torch.no_grad():
        ref = graph.model.inference([{"image": x, "height": 150, "width": 200}], do_postprocess=False)[0]
        boxes, scores, classes, masks = graph(x)
    assert len(ref) > 0
    assert torch.equal(boxes, ref.pred_boxes.tensor) and torch.equal(scores, ref.scores)
    assert torch.equal(classes, ref.pred_classes) and torch.equal(masks, ref.pred_masks)


def test_detector_refuses_soft_nms_by_name():
    with pytest.raises(ExportError, match="use_soft_nms=True: soft-NMS has no standard ONNX operator"):
        build_graph(TOY_DET, None, [*TOY_DET_SMALL, "model.roi_heads.use_soft_nms=True"], None)


def test_detector_onnx_gives_the_eager_detections(tmp_path):
    torch.manual_seed(0)
    kind, graph = build_graph(TOY_DET, None, TOY_DET_SMALL, None)
    assert kind == "det" and isinstance(graph, DetectorGraph)
    path = export_graph(graph, torch.rand(3, 160, 128) * 255, tmp_path / "det.onnx")
    ops = _assert_plain_onnx(path)
    assert {"NonMaxSuppression", "RoiAlign", "TopK"} <= set(ops)
    assert not {"Loop", "If", "NonZero", "ScatterND"} & set(ops)
    gen = torch.Generator().manual_seed(3)
    # sizes never traced, below the 256 square the toy detector pads to
    samples = [torch.rand(3, h, w, generator=gen).mul(255).round() for h, w in [(120, 176), (64, 80)]]
    # the graph's outputs against detectron2's model.inference(do_postprocess=False), matched by
    # class and box (1e-3 px), and graph_instances against model([...])
    for res in check_detector(path, graph, samples):
        assert res.eager_count == res.onnx_count == res.matched > 0, res
        assert res.max_box_error < 1e-3 and res.max_score_error < 1e-3, res
        assert res.max_mask_error < 1e-3, res
    model, session = graph.model, onnx_session(path)
    for x in samples:
        h, w = x.shape[-2:]
        outputs = session.run(None, {"image": x.numpy()})
        assert [o.dtype for o in outputs] == [np.float32, np.float32, np.int64, np.float32]
        assert outputs[3].shape[1:] == (1, 28, 28)
        with torch.no_grad():  # eager reference at another output size: boxes and masks are rescaled
            ref = model([{"image": x, "height": 2 * h, "width": 2 * w}])[0]["instances"]
        got = graph_instances(outputs, (h, w), (2 * h, 2 * w))
        i, j = match_detections(
            ref.pred_boxes.tensor.numpy(),
            ref.pred_classes.numpy(),
            got.pred_boxes.tensor.numpy(),
            got.pred_classes.numpy(),
            2e-3,
        )
        assert len(ref) == len(got) == len(i) > 0
        torch.testing.assert_close(got.scores[j], ref.scores[i], atol=1e-3, rtol=0)
        assert got.pred_masks.shape == (len(ref), 2 * h, 2 * w)
        assert (got.pred_masks[j] != ref.pred_masks[i]).float().mean() < 1e-4


def _export_tool():
    spec = importlib.util.spec_from_file_location(
        "export_tool", Path(__file__).parents[1] / "tools" / "export.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_tool_refuses_bad_input_with_one_message(tmp_path):
    tool = _export_tool()
    tiny = ["--backbone", "eva02_tiny", "depth=1", "img_size=32", "patch_size=16"]
    out = tmp_path / "x.onnx"
    with pytest.raises(SystemExit, match="--format 'tflite': unknown"):
        tool.main([*tiny, "--output", str(out), "--format", "tflite"])
    with pytest.raises(SystemExit, match="folder .*missing does not exist"):
        tool.main([*tiny, "--output", str(tmp_path / "missing" / "x.onnx")])
    with pytest.raises(SystemExit, match="unknown backbone 'eva02_huge'"):
        tool.main(["--backbone", "eva02_huge", "--output", str(out)])
    # a segmenter checkpoint of another class count: mmengine's strict load names the tensors
    kind, graph = build_graph(TOY_SEG, None, ["model.decode_head.num_classes=3"], None)
    ckpt = tmp_path / "seg3.pth"
    torch.save({"state_dict": graph.segmentor.state_dict()}, ckpt)
    with pytest.raises(SystemExit, match="(?s)seg3.pth does not fit .*conv_seg"):
        tool.main(["--config-file", TOY_SEG, "--weights", str(ckpt), "--output", str(out)])
    with pytest.raises(SystemExit, match="--detector-part 'heads': unknown"):
        tool.main(["--config-file", TOY_DET, "--detector-part", "heads", "--output", str(out)])
    with pytest.raises(SystemExit, match="cannot build the model"):
        tool.main(["--config-file", TOY_DET, "model.backbone.net.depth=banana", "--output", str(out)])
    assert list(tmp_path.iterdir()) == [ckpt]


def test_dynamic_export_that_comes_out_fixed_size_is_refused(tmp_path):
    # a token grid of exactly one window: the exporter specialises the size instead of keeping it free
    net = build_backbone(
        "eva02_tiny", img_size=32, patch_size=16, depth=1, use_cls_token=False, window_size=2,
        window_block_indexes=(0,),
    ).eval()  # fmt: skip
    out = tmp_path / "bb.onnx"
    with pytest.raises(ExportError, match="fixed to the tracing size 32x32"):
        export_graph(BackboneGraph(net), torch.randn(2, 3, 32, 32), out)
    assert list(tmp_path.iterdir()) == []
