"""Timing helpers on ``torch.utils.benchmark`` (CUDA-synchronised, at this process's thread count)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.utils.benchmark import Timer


def _timer(fn: Callable[[], object]) -> Timer:
    # Timer runs at one thread unless told otherwise; measure what the process is configured for.
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def seconds_per_call(fn: Callable[[], object], iters: int, warmup: int = 1) -> float:
    """Mean seconds per call of ``fn`` over ``iters`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return _timer(fn).timeit(iters).mean


def best_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Best single-call seconds of each function; calls interleaved so that machine load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timers = {name: _timer(fn) for name, fn in fns.items()}
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(1).mean)
    return best


def add_common_arguments(
    parser: argparse.ArgumentParser, batch_size: int, iters: int, device: str | None = None
) -> None:
    """The flags every benchmark shares (the older spellings stay accepted as aliases)."""
    parser.add_argument("--device", default=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=int, default=batch_size)
    parser.add_argument(
        "--iters", "--repeats", "--steps", "--train-iters", dest="iters", type=int, default=iters,
        help="timed iterations per measurement (after one warm-up)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def apply_threads(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
