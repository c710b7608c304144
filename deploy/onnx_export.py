"""Write an exportable graph module as ONNX (dynamo exporter) or as a ``torch.export`` program.

Dynamic height and width are free ``Dim``s, or multiples of the graph's ``size_multiple``
(``H = m * h``) where a model only supports such sizes. Files are written atomically: a failed
export leaves no partial file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.export import Dim

from backbone.io import atomic_write

from .ops import custom_translations

Format = Literal["onnx", "torch-export"]
FORMATS = ("onnx", "torch-export")
MIN_OPSET = 18


class ExportError(RuntimeError):
    """A model, option or output path that cannot be exported, with the reason."""


def check_output_path(output: str | os.PathLike) -> Path:
    """The output path, refused before any work when its folder cannot be written."""
    path = Path(output)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ExportError(f"--output {path}: is a folder, expected a file name")
    if not folder.is_dir():
        raise ExportError(f"--output {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"--output {path}: folder {folder} is not writable")
    return path


def dynamic_shapes(graph: nn.Module, dynamic: bool) -> dict | None:
    """``dynamic_shapes`` for the graph's single ``image`` input (batch too where it has one).

    Height and width are free dims when ``graph.size_multiple`` is 1, else multiples of it.
    """
    if not dynamic:
        return None
    m = graph.size_multiple
    if m == 1:
        h, w = Dim("height", min=2, max=graph.max_size), Dim("width", min=2, max=graph.max_size)
    else:
        h = m * Dim("h", min=1, max=graph.max_size // m)
        w = m * Dim("w", min=1, max=graph.max_size // m)
    spatial = {graph.image_rank - 2: h, graph.image_rank - 1: w}
    if graph.image_rank == 4:
        spatial[0] = Dim("batch", min=1, max=1024)
    return {"image": spatial}


def export_graph(
    graph: nn.Module,
    sample: torch.Tensor,
    output: str | os.PathLike,
    fmt: Format = "onnx",
    dynamic: bool = True,
    opset: int = MIN_OPSET,
) -> Path:
    """Export ``graph`` (a module of :mod:`deploy.graphs`) traced on ``sample`` to ``output``.

    ONNX files are validated with ``onnx.checker`` before they replace ``output``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: unknown, expected one of {FORMATS}")
    if fmt == "onnx" and opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: the dynamo exporter needs opset {MIN_OPSET} or newer")
    path = check_output_path(output)
    graph = graph.eval()
    shapes = dynamic_shapes(graph, dynamic)
    with torch.no_grad():
        if fmt == "torch-export":
            # Dim.AUTO: sizes the model specialises (a batch of one, grids of one patch) stay static
            # instead of failing; the ONNX exporter relaxes its named dims the same way
            auto = {"image": {k: Dim.AUTO for k in shapes["image"]}} if shapes else None
            program = torch.export.export(graph, (sample,), dynamic_shapes=auto, strict=False)
            atomic_write(path, lambda handle: torch.export.save(program, handle))
            return path
        program = torch.onnx.export(
            graph,
            (sample,),
            dynamo=True,
            input_names=["image"],
            output_names=list(graph.output_names),
            dynamic_shapes=shapes,
            opset_version=opset,
            external_data=False,
            custom_translation_table=custom_translations(),
            verbose=False,
        )

    import onnx

    proto = program.model_proto  # weights inside the file (external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    if shapes:
        _refuse_fixed_size(proto, graph.image_rank, tuple(sample.shape[-2:]))
    atomic_write(path, lambda handle: handle.write(proto.SerializeToString()))
    return path


def _refuse_fixed_size(proto, image_rank: int, size: tuple[int, int]) -> None:
    """``--dynamic`` asked for, but the exporter kept the tracing height or width as a constant: the
    model branched on it (e.g. a token grid of exactly one window). Nothing is written."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if any(not dims[axis].dim_param for axis in (image_rank - 2, image_rank - 1)):
        raise ExportError(
            f"--dynamic: the exported graph is fixed to the tracing size {size[0]}x{size[1]} (the model "
            "specialises at that size, e.g. a grid of exactly one attention window); trace at a larger --size"
        )


def op_types(path: str | os.PathLike) -> list[str]:
    """Sorted op types of an ONNX file (nested graphs included), for the deployment docs."""
    import onnx

    found: set[str] = set()

    def visit(graph) -> None:
        for node in graph.node:
            standard = node.domain in ("", "ai.onnx")
            found.add(node.op_type if standard else f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    model = onnx.load(os.fspath(path))
    visit(model.graph)
    for fn in model.functions:
        visit(fn)
    return sorted(found)
