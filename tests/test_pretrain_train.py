"""Pre-training loop: learning, exact resume, crash-safe checkpoints, DDP on CPU (gloo)."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from pretraining import MIMStudent, build_teacher, neg_cosine_loss, recipe_config, released_init, train
from pretraining.schedule import build_optimizer, lr_at
from pretraining.state import load_training_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(model_overrides={"depth": 2}, img_size=56, min_mask_patches_per_block=2, num_workers=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(16):
        sub = root / f"class{i % 2}"  # ImageFolder layout, found recursively
        sub.mkdir(exist_ok=True)
        img = np.zeros((64, 80, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
        y, x = rng.integers(0, 40, 2)
        img[y : y + 24, x : x + 30] = rng.integers(0, 255, 3, dtype=np.uint8)
        Image.fromarray(img).save(sub / f"{i}.png")
    return str(root)


def _cfg(image_dir, out, **kw):
    args = dict(TINY, data=image_dir, output_dir=str(out), progress=False, tensorboard=False)
    args.update(kw)
    return recipe_config("toy", **args)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    from backbone import build_backbone

    torch.manual_seed(0)
    student = MIMStudent(build_backbone("eva02_tiny", img_size=56, depth=2), 32)
    released_init(student)
    teacher = build_teacher("tiny", (4, 4), seed=0)
    images = torch.randn(4, 3, 56, 56)
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[:, torch.tensor([1, 2, 5, 6, 9, 10])] = True
    target = teacher(images)[mask]
    opt = build_optimizer(student, 1e-3, 0.05, (0.9, 0.98), 1e-6)
    losses = []
    for _ in range(15):
        loss = neg_cosine_loss(student(images, mask), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses


def test_schedule_warmup_and_cosine():
    assert lr_at(0, 100, 10, 1.0, 0.1) == 0.0
    assert lr_at(5, 100, 10, 1.0, 0.1) == pytest.approx(0.5)
    assert lr_at(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0, 0.1) == pytest.approx(0.1 + 0.45)  # half-way down the cosine
    assert lr_at(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_resume_reproduces_an_uninterrupted_run_exactly(image_dir, tmp_path):
    # 16 images, micro-batch 2, accumulation 2 -> 4 steps per epoch; stopping at step 3 is mid-epoch,
    # and drop path exercises the saved RNG state.
    common = dict(batch_size=2, total_batch_size=4, max_steps=6, save_every=3, drop_path=0.1, log_every=1)
    full = train(_cfg(image_dir, tmp_path / "full", **common))
    part = train(_cfg(image_dir, tmp_path / "split", stop_after=3, **common))
    assert part["step"] == 3
    rest = train(_cfg(image_dir, tmp_path / "split", resume="auto", **common))
    assert rest["step"] == 6
    a = load_training_state(str(tmp_path / "full" / "checkpoint-last.pth"))
    b = load_training_state(str(tmp_path / "split" / "checkpoint-last.pth"))
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert dict(full["history"])[6] == dict(rest["history"])[6]
    assert dict(full["history"])[6] < dict(full["history"])[1]


def test_gradient_accumulation_equals_the_large_batch(image_dir, tmp_path):
    fixed = dict(max_steps=2, total_batch_size=4, num_mask_patches=4, min_mask_patches_per_block=1)
    train(_cfg(image_dir, tmp_path / "accum", batch_size=2, **fixed))
    train(_cfg(image_dir, tmp_path / "big", batch_size=4, **fixed))
    a = load_training_state(str(tmp_path / "accum" / "checkpoint-last.pth"))["model"]
    b = load_training_state(str(tmp_path / "big" / "checkpoint-last.pth"))["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


def test_bf16_autocast_and_activation_checkpointing_match_fp32(image_dir, tmp_path):
    ref = train(_cfg(image_dir, tmp_path / "fp32", batch_size=4, max_steps=2, log_every=1))["history"]
    bf16 = train(_cfg(image_dir, tmp_path / "bf16", batch_size=4, max_steps=2, log_every=1, amp="bf16"))
    assert abs(bf16["history"][0][1] - ref[0][1]) < 0.02
    ckpt = train(
        _cfg(image_dir, tmp_path / "ckpt", batch_size=4, max_steps=2, log_every=1, act_checkpoint=True)
    )
    assert ckpt["history"][-1][1] == pytest.approx(ref[-1][1], abs=1e-5)  # recomputation changes nothing


def test_resume_refuses_changed_settings_and_logs_to_tensorboard(image_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = train(_cfg(image_dir, tmp_path, batch_size=4, max_steps=2, log_every=1, tensorboard=True))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    logged = events.Scalars("train/loss")
    assert [e.step for e in logged] == [1, 2]
    assert [e.value for e in logged] == pytest.approx([loss for _, loss in summary["history"]], abs=1e-6)
    with pytest.raises(ValueError, match="img_size: saved 56, now 84"):
        train(_cfg(image_dir, tmp_path, batch_size=4, max_steps=2, img_size=84, resume="auto"))


def test_too_few_images_is_a_clear_error(image_dir, tmp_path):
    with pytest.raises(ValueError, match="16 images cannot fill one optimizer batch"):
        train(_cfg(image_dir, tmp_path, batch_size=32, total_batch_size=32, max_steps=1))
    with pytest.raises(FileNotFoundError, match="no images"):
        train(_cfg(str(tmp_path), tmp_path, max_steps=1))


_WRITER = """
import torch
from backbone.io import atomic_save
for version in range(1000):
    payload = torch.full((6_000_000,), float(version))
    atomic_save({{"version": torch.tensor(version), "payload": payload}}, {path!r})
    print(version, flush=True)
"""


def test_killed_during_write_never_corrupts_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint-last.pth")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER.format(path=path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "0"  # version 0 is complete on disk
        deadline = time.time() + 60
        while not any(n.endswith(".tmp") for n in os.listdir(tmp_path)):  # a later version is being written
            assert time.time() < deadline, "writer never started a second checkpoint"
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    state = torch.load(path, weights_only=True)
    version = int(state["version"])
    assert torch.equal(state["payload"], torch.full((6_000_000,), float(version)))


def test_torchrun_gloo_matches_a_single_process(image_dir, tmp_path):
    # 2 ranks x micro-batch 2 see exactly the samples of 1 rank x micro-batch 4; with the
    # masked-token count fixed per image the averaged gradients are the same.
    flags = [
        "--recipe", "toy", "--data", image_dir, "--img-size", "56", "--model-overrides", "depth=2",
        "--max-steps", "2", "--total-batch-size", "4", "--num-mask-patches", "4",
        "--min-mask-patches-per-block", "1", "--num-workers", "0", "--no-progress", "--no-tensorboard",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with socket.socket() as sock:  # a free port, so parallel runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    subprocess.run(
        [*ddp, "tools/pretrain.py", *flags, "--batch-size", "2", "--output-dir", str(tmp_path / "ddp")],
        cwd=REPO, env=env, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "tools/pretrain.py", *flags, "--batch-size", "4", "--output-dir", tmp_path / "1"],
        cwd=REPO, env=env, check=True, capture_output=True,
    )  # fmt: skip
    a = load_training_state(str(tmp_path / "ddp" / "checkpoint-last.pth"))
    b = load_training_state(str(tmp_path / "1" / "checkpoint-last.pth"))
    assert a["world_size"] == 2 and a["step"] == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=1e-4, atol=1e-5, msg=key)
