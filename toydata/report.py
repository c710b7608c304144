"""The demo's record of what it did: one JSON per step, a summary table, ``summary.json`` and a picture.

Every demo step writes ``<demo root>/steps/<name>.json`` through :func:`record_step`; :func:`summarize`
collects them in the order the demo ran, prints the table and writes ``summary.json`` and
``summary.png`` (ground truth next to prediction for a few validation images, and the training
curves drawn from the runs' own metrics files).
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from backbone.io import atomic_write_text


def record_step(
    root: str | os.PathLike,
    name: str,
    *,
    seconds: float,
    metrics: dict[str, float],
    what: str = "",
    outputs: str = "",
    curves: dict | None = None,
    finished: float | None = None,
) -> Path:
    """Write ``root/steps/name.json``; ``curves`` holds ``{label: [[iteration, value], ...]}``.

    ``finished`` (epoch seconds, default now) places the step in time: steps may run side by side,
    so the demo's total is the wall clock from the first start to the last finish, not a sum.
    """
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"demo step {name!r}: metric {key!r} = {value!r} is not a finite number")
    path = Path(root) / "steps" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    finished = time.time() if finished is None else float(finished)
    record = {"name": name, "what": what, "metrics": metrics, "seconds": round(float(seconds), 1)}
    record.update(outputs=outputs, curves=curves or {}, started=finished - seconds, finished=finished)
    atomic_write_text(path, json.dumps(record, indent=1))
    return path


def det_curves(metrics_json: str | os.PathLike) -> tuple[dict, dict[str, float]]:
    """Loss and AP against iteration from detectron2's ``metrics.json``, and the last evaluation."""
    rows = [json.loads(line) for line in Path(metrics_json).read_text().splitlines() if line.strip()]
    # a resumed run appends to the same file: keep the last row per iteration
    loss = sorted({r["iteration"] + 1: r["total_loss"] for r in rows if "total_loss" in r}.items())
    evals = sorted({r["iteration"]: r for r in rows if "bbox/AP" in r}.values(), key=lambda r: r["iteration"])
    if not evals:
        raise ValueError(f"{metrics_json}: no evaluation (bbox/AP) recorded")
    curves = {"loss": [list(p) for p in loss]}
    for key in ("bbox/AP", "segm/AP"):
        curves[key.replace("/", "_")] = [[r["iteration"] + 1, r[key]] for r in evals if key in r]
    last = evals[-1]
    return curves, {k.replace("/", "_"): float(last[k]) for k in ("bbox/AP", "segm/AP") if k in last}


def seg_curves(work_dir: str | os.PathLike) -> tuple[dict, dict[str, float]]:
    """Loss and mIoU against iteration from mmengine's newest ``vis_data/scalars.json`` in ``work_dir``."""
    files = sorted(glob.glob(str(Path(work_dir) / "*" / "vis_data" / "scalars.json")))
    if not files:
        raise FileNotFoundError(f"{work_dir}: no */vis_data/scalars.json (did the training run?)")
    rows = [json.loads(line) for line in Path(files[-1]).read_text().splitlines() if line.strip()]
    loss = [[r["iter"], r["loss"]] for r in rows if "loss" in r and "iter" in r]
    # validation rows carry "step" (the training iteration) and the metric, in training order
    miou = [[r["step"], r["mIoU"]] for r in rows if "mIoU" in r]
    if not miou:
        raise ValueError(f"{files[-1]}: no validation (mIoU) recorded")
    return {"loss": loss, "mIoU": miou}, {"mIoU": float(miou[-1][1])}


def read_steps(root: str | os.PathLike, order: list[str]) -> list[dict]:
    steps = {p.stem: json.loads(p.read_text()) for p in sorted((Path(root) / "steps").glob("*.json"))}
    ranked = [steps.pop(n) for n in order if n in steps]
    return ranked + [steps[n] for n in sorted(steps)]


def wall_seconds(steps: list[dict]) -> float:
    """First start to last finish; the plain sum for records without times."""
    if all("started" in s and "finished" in s for s in steps):
        return max(s["finished"] for s in steps) - min(s["started"] for s in steps)
    return sum(s["seconds"] for s in steps)


def format_table(steps: list[dict], total: float) -> str:
    rows = [("step", "what", "figures", "seconds", "outputs")]
    for s in steps:
        figures = "  ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in s["metrics"].items()
        )
        rows.append((s["name"], s["what"], figures, f"{s['seconds']:.0f}", s["outputs"]))
    overlap = total < sum(s["seconds"] for s in steps) - 1
    rows.append(("total", "wall clock (steps overlap)" if overlap else "", "", f"{total:.0f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    rule = "-" * len(line(rows[0]))
    return "\n".join([rule, line(rows[0]), rule, *map(line, rows[1:-1]), rule, line(rows[-1]), rule])


def write_summary(root: str | os.PathLike, order: list[str]) -> tuple[dict, str]:
    steps = read_steps(root, order)
    if not steps:
        raise FileNotFoundError(f"{root}/steps: no demo step recorded")
    total = round(wall_seconds(steps), 1)
    summary = {
        "steps": [{k: s[k] for k in ("name", "what", "metrics", "seconds", "outputs")} for s in steps],
        "total_seconds": total,
    }
    atomic_write_text(Path(root) / "summary.json", json.dumps(summary, indent=1))
    return summary, format_table(steps, total)


def read_picture(path: str | os.PathLike) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read picture {path}")
    return img[:, :, ::-1]


def draw_summary(
    png: str | os.PathLike,
    steps: list[dict],
    pairs: list[tuple[str, np.ndarray, np.ndarray]],
) -> None:
    """``pairs``: (title, ground-truth picture, predicted picture); one curve panel per step with curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_curves = [s for s in steps if s.get("curves")]
    cols = max(len(pairs), len(with_curves), 1)
    fig, axes = plt.subplots(3, cols, figsize=(3.2 * cols, 9.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (title, truth, pred) in enumerate(pairs):
        for row, (img, label) in enumerate(((truth, "ground truth"), (pred, "prediction"))):
            axes[row, i].imshow(img)
            axes[row, i].set_title(f"{title}: {label}", fontsize=8)
    for i, step in enumerate(with_curves):
        ax = axes[2, i]
        ax.axis("on")
        curves = step["curves"]
        losses = {k: v for k, v in curves.items() if "loss" in k}
        for (label, points), style in zip(losses.items(), ("-", "--", ":")):
            if points:
                ax.plot(*zip(*points), color="tab:gray", lw=1, ls=style, label=label)
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        metrics = {k: v for k, v in curves.items() if k not in losses and v}
        if metrics:
            twin = ax.twinx()
            for label, points in metrics.items():
                twin.plot(*zip(*points), marker="o", ms=3, label=label)
            twin.set_ylim(0, 100)
            twin.tick_params(labelsize=7)
            twin.legend(fontsize=7, loc="center right")
        figures = ", ".join(
            f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in step["metrics"].items()
        )
        ax.set_title(f"{step['name']}: {figures}", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
