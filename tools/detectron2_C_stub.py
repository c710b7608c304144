"""Stand-in for detectron2's compiled ``_C`` extension.

The pure-Python detectron2 wheel used when ``DETECTRON2_SOURCE`` is unset
ships a ``_C`` library for another Python version. Everything this toolkit
needs (Cascade Mask R-CNN, RoIAlign through torchvision, COCO/LVIS
evaluation through pycocotools/lvis) runs without it; the few ops that do
need it raise a clear error here instead of an opaque import failure.
"""


def _missing(name: str):
    def call(*args, **kwargs):
        raise RuntimeError(
            f"detectron2 compiled op '{name}' is not available: this detectron2 was installed "
            "from the pure-Python wheel. Rebuild the environment with DETECTRON2_SOURCE=<git URL "
            "or local checkout of detectron2> to get rotated boxes, deformable convolution and "
            "the fast COCO evaluator."
        )

    call.__name__ = name
    return call


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(name)


def get_compiler_version() -> str:
    return "none (pure-Python detectron2 wheel)"


def get_cuda_version() -> str:
    return "none"


def has_cuda() -> bool:
    return False
