"""Reliability of the shared mechanisms: reading a checkpoint never runs code, non-finite weights and
unknown override keys are refused, and every adapter's checkpoints survive a kill during the write."""

import multiprocessing
import os
import pickle
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig
from mmengine.config import Config
from torch import nn

import seg  # noqa: F401  (atomic local writes for mmengine)
from backbone import CheckpointError, EVA02ViT, load_checkpoint
from backbone.io import atomic_save, read_checkpoint, remove_stale_temporaries
from backbone.overrides import OverrideError, checked_dotlist, checked_options
from det.engine import AtomicCheckpointer, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
DET_TOY = ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py"
SEG_TOY = ROOT / "configs/seg/toy/upernet_eva02_tiny_toy.py"


class _CreatesAFile:
    """A pickle payload: unpickling it calls ``open(marker, "w")``, i.e. runs code that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload_checkpoint(path: Path, marker: Path, *, torch_format: bool) -> None:
    data = {"model": {"weight": torch.zeros(2)}, "trap": _CreatesAFile(marker)}
    if torch_format:
        torch.save(data, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(data, handle)


# ------------------------------------------------------------------ no code runs on detector resume
@pytest.mark.parametrize("name", ["model_0000009.pkl", "model_0000009.pth"])
def test_detector_resume_never_runs_a_pickled_payload(tmp_path, name):
    marker = tmp_path / "pwned"
    _payload_checkpoint(tmp_path / name, marker, torch_format=name.endswith(".pth"))
    (tmp_path / "last_checkpoint").write_text(name)
    checkpointer = AtomicCheckpointer(nn.Linear(2, 1), str(tmp_path))
    assert checkpointer.has_checkpoint()
    with pytest.raises(CheckpointError, match=name) as err:
        checkpointer.resume_or_load("", resume=True)
    assert not marker.exists()
    if name.endswith(".pkl"):  # the message names the explicit trust flag
        assert "+train.trust_pickle=True" in str(err.value)


def test_detector_checkpointer_reads_its_own_checkpoints_safely(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    AtomicCheckpointer(model, str(tmp_path), optimizer=optimizer).save("model_final", iteration=7)
    other = nn.Linear(3, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    extra = AtomicCheckpointer(other, str(tmp_path), optimizer=other_opt).resume_or_load("", resume=True)
    assert extra["iteration"] == 7
    assert torch.equal(other.weight, model.weight)
    buf = optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"], buf)


def test_trusted_pickle_is_read_only_when_asked(tmp_path):
    marker = tmp_path / "ran"
    _payload_checkpoint(tmp_path / "m.pkl", marker, torch_format=False)
    checkpointer = AtomicCheckpointer(nn.Linear(2, 1), str(tmp_path), trust_pickle=True)
    checkpointer._load_file(str(tmp_path / "m.pkl"))
    assert marker.exists()  # with the explicit flag the file is unpickled as detectron2 would


# ------------------------------------------------------------------ non-finite tensors
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_file_and_key(tmp_path, bad):
    sd = {"a.weight": torch.ones(3), "blocks.1.attn.qkv.weight": torch.tensor([0.0, bad]), "n": torch.ones(1)}
    path = tmp_path / "w.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match=r"w\.pth: .*'model\.blocks\.1\.attn\.qkv\.weight'.*NaN or inf"):
        read_checkpoint(path)
    assert read_checkpoint(path, allow_non_finite=True)["model"]["n"].item() == 1.0
    model = EVA02ViT(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["blocks.1.mlp.w12.weight" if "blocks.1.mlp.w12.weight" in state else next(iter(state))][0] = bad
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="w.pth"):
        load_checkpoint(model, path)


def test_random_bytes_are_not_called_a_pickle_problem(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(random.Random(0).randbytes(4096).replace(b"PK", b"xx").replace(b"\x80", b"\x00"))
    with pytest.raises(
        CheckpointError, match=r"noise\.pth: not a readable PyTorch checkpoint: it is neither a zip"
    ):
        read_checkpoint(path)


# ------------------------------------------------------------------ unknown override keys
def test_detectron2_override_typo_is_refused_with_a_suggestion():
    cfg = LazyConfig.load(str(DET_TOY))
    with pytest.raises(
        OverrideError, match=r"'train\.init_checkpont'.*did you mean 'train\.init_checkpoint'"
    ):
        apply_overrides(cfg, ["train.init_checkpont=model.pth"])
    with pytest.raises(OverrideError, match="'trian'.*did you mean 'train'"):
        apply_overrides(cfg, ["trian.max_iter=3"])
    cfg = apply_overrides(cfg, ["train.max_iter=3", "+train.note=abc", "model.backbone.net.depth=2"])
    assert (cfg.train.max_iter, cfg.train.note, cfg.model.backbone.net.depth) == (3, "abc", 2)


def test_override_below_a_plain_value_is_refused():
    cfg = LazyConfig.load(str(DET_TOY))
    with pytest.raises(OverrideError, match="'train.max_iter' is int"):
        checked_dotlist(cfg, ["train.max_iter.x=1"])
    with pytest.raises(OverrideError, match="not of the form key=value"):
        checked_dotlist(cfg, ["train.max_iter"])


def test_mmseg_cfg_options_typo_is_refused_and_plus_adds_a_key():
    cfg = Config.fromfile(str(SEG_TOY))
    with pytest.raises(OverrideError, match=r"did you mean 'model\.backbone\.pretrained'"):
        checked_options(cfg, {"model.backbone.pretraned": "x.pth"})
    assert checked_options(cfg, {"train_dataloader.batch_size": 1, "+extra_key": 2}) == {
        "train_dataloader.batch_size": 1,
        "extra_key": 2,
    }
    first = next(iter(cfg.train_pipeline[0]))  # list items by index, as mmengine addresses them
    checked_options(cfg, {f"train_pipeline.0.{first}": "x"})


# ------------------------------------------------------------------ atomic writes: kill during the write
# The writers run in forked children that only serialise tensors built by the parent: a child of a
# process that has used OpenMP must not start parallel tensor work of its own (it can hang).
VERSIONS = 3


def _weights() -> list[torch.Tensor]:
    return [torch.full((1536, 1024), float(i)) for i in range(VERSIONS)]


def _writer_det(directory: str, ready, weights) -> None:
    model = nn.Linear(1024, 1536)
    checkpointer = AtomicCheckpointer(model, directory)
    for i in range(10**6):
        model.weight.data = weights[i % VERSIONS]
        checkpointer.save(f"model_{i % 2}", iteration=i)
        ready.set()


def _writer_seg(directory: str, ready, weights) -> None:
    from mmengine.runner.checkpoint import save_checkpoint

    for i in range(10**6):
        state = {"state_dict": {"w": weights[i % VERSIONS]}, "meta": {"iter": i}}
        save_checkpoint(state, f"{directory}/iter_{i % 2}.pth")
        ready.set()


def _writer_pretrain(directory: str, ready, weights) -> None:
    from pretraining.recipes import PretrainConfig
    from pretraining.state import save_training_state

    model = nn.Linear(1024, 1536)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    cfg = PretrainConfig()
    for i in range(10**6):
        model.weight.data = weights[i % VERSIONS]
        save_training_state(f"{directory}/ckpt_{i % 2}.pth", model, optimizer, scaler, i, cfg, 1)
        ready.set()


def _weight_of(adapter: str, path: Path) -> torch.Tensor:
    if adapter == "det":
        model = nn.Linear(1024, 1536)
        AtomicCheckpointer(model).load(str(path))
        return model.weight.detach()
    if adapter == "seg":
        from mmengine.runner.checkpoint import _load_checkpoint

        return _load_checkpoint(str(path), map_location="cpu")["state_dict"]["w"]
    from pretraining.state import load_training_state

    return load_training_state(str(path))["model"]["weight"]


@pytest.mark.parametrize(
    "adapter, writer", [("det", _writer_det), ("seg", _writer_seg), ("pretrain", _writer_pretrain)]
)
def test_kill_during_checkpoint_writes_leaves_only_whole_checkpoints(tmp_path, adapter, writer):
    rng = random.Random(adapter)
    context = multiprocessing.get_context("fork")  # the imports are done once, in this process
    interrupted = 0
    weights = _weights()
    # A kill lands inside a write by chance (mmengine serialises to memory first, so its window
    # is short on a fast disk): kill at least four times, and on until one has landed.
    for kill in range(100):
        if kill >= 4 and interrupted:
            break
        directory = tmp_path / f"kill{kill}"
        directory.mkdir()
        ready = context.Event()
        proc = context.Process(target=writer, args=(str(directory), ready, weights), daemon=True)
        proc.start()
        assert ready.wait(120), "the writer never finished a first checkpoint"
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        names = sorted(p.name for p in directory.iterdir())
        checkpoints = [directory / n for n in names if n.endswith(".pth") and not n.startswith(".")]
        assert checkpoints, names
        for path in checkpoints:  # every checkpoint under its normal name is whole
            weight = _weight_of(adapter, path)
            assert torch.equal(weight, torch.full_like(weight, weight[0, 0].item())), path
            assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), oct(path.stat().st_mode)
        stale = remove_stale_temporaries(directory)
        interrupted += len(stale)
        assert sorted(p.name for p in directory.iterdir()) == [n for n in names if not n.startswith(".")]
    # At least one kill landed inside a write (its temporary file was left and then cleaned up).
    assert interrupted >= 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    atomic_save({"x": torch.ones(1)}, tmp_path / "keep.pth")
    (tmp_path / ".keep.pth.ab12cd.tmp").write_bytes(b"torn")
    (tmp_path / ".hidden").write_text("mine")
    (tmp_path / "notes.tmp").write_text("mine")
    assert remove_stale_temporaries(tmp_path) == [str(tmp_path / ".keep.pth.ab12cd.tmp")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "keep.pth", "notes.tmp"]
    assert (tmp_path / "keep.pth").stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_arguments_left_at_their_default_are_settings_too():
    """A group that builds an object accepts that object's keyword arguments (mmseg registry, LazyCall)."""
    from seg.launch import registered_type

    seg_cfg = Config.fromfile(str(SEG_TOY))
    assert "indices" not in seg_cfg.test_dataloader.dataset  # BaseSegDataset's argument, by **kwargs
    checked_options(seg_cfg, {"test_dataloader.dataset.indices": 1}, registered_type)
    with pytest.raises(OverrideError, match=r"did you mean 'test_dataloader\.dataset\.indices'"):
        checked_options(seg_cfg, {"test_dataloader.dataset.indicse": 1}, registered_type)
    det_cfg = LazyConfig.load(str(DET_TOY))
    with pytest.raises(OverrideError, match=r"did you mean 'model\.backbone\.net\.drop_path_rate'"):
        checked_dotlist(det_cfg, ["model.backbone.net.drop_path_rat=0.1"])
