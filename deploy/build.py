"""Build the graph module to export from a backbone preset or a config, with the project's loaders."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import torch
from torch import nn

from backbone import CheckpointError, build_backbone, load_checkpoint

from .detector import DetectorGraph
from .graphs import BackboneGraph, DetectorPyramidGraph, SegmenterGraph
from .onnx_export import ExportError

logger = logging.getLogger(__name__)


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["depth=4", "use_cls_token=False", "window_block_indexes=[0,1]"]`` -> keyword arguments."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ExportError(f"override {pair!r}: expected name=value")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text  # a bare word, e.g. position_rule=stretch
    return out


def _check_weights(weights: str | None) -> None:
    if weights is not None and not Path(weights).is_file():
        raise ExportError(f"--weights {weights}: no such file")


def backbone_graph(preset: str, overrides: list[str], weights: str | None) -> BackboneGraph:
    """The bare ViT of ``preset`` with ``build_backbone`` overrides; weights by ``load_checkpoint``."""
    _check_weights(weights)
    kwargs = parse_overrides(overrides)
    try:
        net = build_backbone(preset, **kwargs)
    except (TypeError, ValueError) as err:
        raise ExportError(f"--backbone {preset} {' '.join(overrides)}: {err}") from None
    if weights:
        try:
            logger.info(load_checkpoint(net, weights).summary())
        except CheckpointError as err:
            raise ExportError(f"--weights {weights} does not fit backbone {preset}: {err}") from None
    return BackboneGraph(net.eval())


def config_kind(config_file: str) -> str:
    """``"det"`` for a detectron2 lazy config (its ``model`` has a ``_target_``), ``"seg"`` for mmseg."""
    if not Path(config_file).is_file():
        raise ExportError(f"--config-file {config_file}: no such file")
    if Path(config_file).suffix != ".py":
        raise ExportError(f"--config-file {config_file}: expected a Python config (.py)")
    text = Path(config_file).read_text()
    # mmseg configs build from dict(type=...) and inherit through _base_; lazy configs use LazyCall
    if "_base_" in text or "dict(type=" in text.replace(" ", ""):
        return "seg"
    return "det"


DETECTOR_PARTS = ("full", "pyramid")


def detector_graph(
    config_file: str, overrides: list[str], weights: str | None, part: str = "full"
) -> DetectorGraph | DetectorPyramidGraph:
    """A detectron2 lazy config's model; weights through ``det.engine.load_weights``.

    ``part``: ``full`` (image to detections, :class:`DetectorGraph`) or ``pyramid`` (image to
    p2..p6, :class:`DetectorPyramidGraph`; heads in PyTorch).
    """
    if part not in DETECTOR_PARTS:
        raise ExportError(f"--detector-part {part!r}: unknown, expected one of {', '.join(DETECTOR_PARTS)}")
    from detectron2.config import LazyConfig, instantiate

    import det  # noqa: F401  (registers the project's datasets and heads)
    from det.engine import apply_overrides, load_weights

    _check_weights(weights)
    try:
        cfg = apply_overrides(LazyConfig.load(config_file), overrides)  # unknown keys refused
        model = instantiate(cfg.model)
    except Exception as err:  # a config error: say which file, keep the reason
        raise ExportError(f"--config-file {config_file}: cannot build the model ({err})") from None
    if weights:
        try:
            load_weights(model, weights)
        except (CheckpointError, RuntimeError) as err:
            raise ExportError(f"--weights {weights} does not fit {config_file}: {err}") from None
    try:
        if part == "pyramid":
            return DetectorPyramidGraph(model.eval())
        return DetectorGraph(model.eval())
    except TypeError as err:
        message = f"--config-file {config_file}: cannot export the detector ({part}): {err}"
        raise ExportError(message) from None


def segmenter_graph(config_file: str, overrides: list[str], weights: str | None) -> SegmenterGraph:
    """An mmseg config's model (whole inference); weights through mmengine's ``load_checkpoint``."""
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint as mm_load_checkpoint
    from mmseg.apis import init_model

    import seg  # noqa: F401  (registers EVA02 and the project's modules)
    from backbone.overrides import checked_options
    from seg.launch import registered_type

    _check_weights(weights)
    try:
        cfg = Config.fromfile(config_file)
        cfg.merge_from_dict(checked_options(cfg, parse_overrides(overrides), registered_type))
        cfg.model.test_cfg = dict(mode="whole")
        cfg.model.backbone.pop("pretrained", None)
        model = init_model(cfg, checkpoint=None, device="cpu")
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"--config-file {config_file}: cannot build the model ({err})") from None
    if weights:
        try:
            mm_load_checkpoint(model, weights, map_location="cpu", strict=True)
        except (RuntimeError, KeyError) as err:
            raise ExportError(f"--weights {weights} does not fit {config_file}: {err}") from None
    try:
        return SegmenterGraph(model.eval())
    except TypeError as err:
        raise ExportError(f"--config-file {config_file}: model: {err}") from None


def build_graph(
    config_file: str | None,
    preset: str | None,
    overrides: list[str],
    weights: str | None,
    detector_part: str = "full",
) -> tuple[str, nn.Module]:
    """(kind, graph module) for ``--config-file`` or ``--backbone``."""
    if (config_file is None) == (preset is None):
        raise ExportError("pass exactly one of --config-file and --backbone")
    if preset is not None:
        return "backbone", backbone_graph(preset, overrides, weights)
    kind = config_kind(config_file)
    if kind == "det":
        return kind, detector_graph(config_file, overrides, weights, detector_part)
    return kind, segmenter_graph(config_file, overrides, weights)


def sample_inputs(kind: str, graph: nn.Module, base: tuple[int, int], count: int = 3) -> list[torch.Tensor]:
    """Inputs of other sizes than ``base`` for checking an export (deterministic)."""
    gen = torch.Generator().manual_seed(0)
    h, w = base
    sizes = [(h - 13, w + 21), (h + 37, w - 30), (h // 2 + 5, w // 2 + 3)][:count]
    if kind == "det":
        cap = graph.max_size
        sizes = [(min(a, cap), min(b, cap)) for a, b in sizes]
    sizes = [(max(a, 2), max(b, 2)) for a, b in sizes]
    return [example_input(kind, s, gen) for s in sizes]


def example_input(
    kind: str, size: tuple[int, int], gen: torch.Generator | None = None, batch: int = 1
) -> torch.Tensor:
    """A random input of the graph's contract: normalised for the backbone, pixel values otherwise.

    Export with ``batch=2``: torch.export specialises a traced batch of one to a constant.
    """
    if kind == "backbone":
        return torch.randn(batch, 3, *size, generator=gen)
    if kind == "det":
        return torch.rand(3, *size, generator=gen) * 255
    return torch.rand(batch, 3, *size, generator=gen) * 255


def default_size(kind: str, graph: nn.Module) -> tuple[int, int]:
    """The export's tracing size: the model's configured input size (below the square pad for det)."""
    if kind == "backbone":
        return graph.net.img_size
    if kind == "seg":
        return tuple(getattr(graph.segmentor.backbone, "img_size", (512, 512)))
    cap = graph.max_size
    return (cap * 3 // 4, cap * 5 // 8)


__all__ = ["build_graph", "default_size", "example_input", "sample_inputs"]
