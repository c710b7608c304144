"""Export of the EVA-02 backbone, segmenter and detector to ONNX / ``torch.export`` graphs."""

from .check import DetectionCheck, SizeCheck, check_detector, check_onnx
from .detector import DetectorGraph
from .graphs import BackboneGraph, DetectorPyramidGraph, SegmenterGraph
from .onnx_export import ExportError, export_graph
from .postprocess import detector_instances, graph_instances

__all__ = [
    "BackboneGraph",
    "DetectionCheck",
    "DetectorGraph",
    "DetectorPyramidGraph",
    "ExportError",
    "SegmenterGraph",
    "SizeCheck",
    "check_detector",
    "check_onnx",
    "detector_instances",
    "export_graph",
    "graph_instances",
]
