"""Export of the EVA-02 backbone, segmenter and detector to ONNX / ``torch.export`` graphs."""

from .check import DetectionCheck, SizeCheck, check_detector, check_onnx
from .graphs import BackboneGraph, DetectorGraph, SegmenterGraph
from .onnx_export import ExportError, export_graph
from .postprocess import detector_instances

__all__ = [
    "BackboneGraph",
    "DetectionCheck",
    "DetectorGraph",
    "ExportError",
    "SegmenterGraph",
    "SizeCheck",
    "check_detector",
    "check_onnx",
    "detector_instances",
    "export_graph",
]
