"""Speed and memory benchmarks, one entry point:

    python tools/benchmark.py [backbone] [--device cpu] [--batch-size 8] [--iters 5] [--compile]
    python tools/benchmark.py det [--cases tiny,base] [--iters 3] [--infer-images 3] [--memory] [--amp]
    python tools/benchmark.py seg [--configs ...] [--batch-size 2] [--iters 3]
    python tools/benchmark.py pretrain [--model eva02_base] [--batch-size 4] [--iters 3]
    python tools/benchmark.py gpu [--reduced] [--iters 5] [--out output/benchmark_gpu.json]
    python tools/benchmark.py profile [--threads 2] [--compile] [--reduced]
    python tools/benchmark.py attention [--threads 2] [--reduced]

Every benchmark takes ``--device``, ``--batch-size``, ``--iters`` and ``--threads``; timing is
``torch.utils.benchmark`` (:mod:`bench.timing`). ``python tools/benchmark.py <name> -h`` lists the rest.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "backbone": "bench.backbone",
    "det": "bench.det",
    "seg": "bench.seg",
    "pretrain": "bench.pretrain",
    "gpu": "bench.gpu",
    "profile": "bench.profile",
    "attention": "bench.attention",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    name, rest = (argv[0], argv[1:]) if argv[:1] and argv[0] in BENCHMARKS else ("backbone", argv)
    importlib.import_module(BENCHMARKS[name]).main(rest)


if __name__ == "__main__":
    main()
