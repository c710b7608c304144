"""``tools/benchmark.py gpu`` in its reduced CPU mode: the same code paths as the GPU run, one table and
a JSON with finite positive figures, and the backbone FLOPs behind the MFU equal to a hand count."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    """The command as a user runs it (one thread: toy models on a shared 2-core machine)."""
    out = tmp_path_factory.mktemp("gpu") / "benchmark_gpu.json"
    cmd = [sys.executable, "tools/benchmark.py", "gpu", "--reduced", "--device", "cpu", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_backbone_flops_behind_the_mfu_equal_the_hand_count(reduced_run):
    _, result = reduced_run
    # eva02_tiny, 2 blocks, 64 px / patch 16 = 4 x 4 tokens, block 0 in 2 x 2 windows, block 1 global
    assert gpu.REDUCED["backbone"] == ("eva02_tiny", gpu.REDUCED_GEOMETRY)
    assert gpu.REDUCED_GEOMETRY["depth"] == 2 and gpu.REDUCED_GEOMETRY["window_size"] == 2
    dim, heads, head_dim, hidden, tokens, patch = 192, 3, 64, 512, 16, 16
    conv = 2 * tokens * dim * 3 * patch * patch  # backward: weight gradient only (the image needs none)
    linear = 2 * tokens * (dim * 3 * dim + dim * dim + dim * 2 * hidden + hidden * dim)  # per block
    sdpa = 4 * 4 * heads * 4**2 * head_dim + 4 * heads * tokens**2 * head_dim  # 4 windows + global
    # backward: linears twice their forward, SDPA 2.5 times (q @ k^T recomputed, four more matmuls)
    expected = 2 * conv + 2 * 3 * linear + sdpa + 5 * sdpa // 2
    row = result["backbone_eva02"]
    assert row["flops"] == expected == 95_232_000
    assert row["mfu"] == pytest.approx(row["flops"] / row["fwd_bwd_s"] / (result["matmul_TFLOPs"] * 1e12))
    assert row["TFLOPs"] == pytest.approx(row["flops"] / row["fwd_bwd_s"] / 1e12)


def test_reduced_run_prints_one_table_with_every_row_and_writes_the_json(reduced_run):
    printed, result = reduced_run
    assert result["reduced"] and result["precision"] == "fp32"
    assert "REDUCED smoke run" in printed
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    labels = [line.split(" | ")[0] for line in table[1:]]
    assert len(labels) == 7
    for wanted in ("matmul peak", "backbone fwd+bwd", "training s/img", "inference s/img", "peak memory"):
        assert any(wanted in label for label in labels), wanted
    assert "activation checkpointing" in table[-2]
    # every figure finite and positive; targets and published figures printed next to ours
    assert gpu._non_finite(result) is None
    assert "<= 0.15 | 0.362" in printed and "<= 0.04 | 0.089" in printed and "<= 12.3 | 12.3" in printed
    cascade = {row["backbone"]: row for row in result["cascade"]}
    assert set(cascade) == {"eva02", "vitdet"}
    for row in (*cascade.values(), result["large_act_ckpt"]):
        assert math.isfinite(row["train_s_per_img"]) and row["train_s_per_img"] > 0
        assert row["peak_mem_GB"] > 0
    assert result["large_act_ckpt"]["act_checkpoint"] and not cascade["eva02"]["act_checkpoint"]
    assert result["table"].splitlines()[0] in printed
