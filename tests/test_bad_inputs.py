"""Bad input across the tools and the Python API: one table, one clear outcome per row.

Each row asserts the exit status (a tool's status, or the exception type of an API call), that the
message names the culprit (file, key or value) and that nothing was written into the output folder.
Tools are called in-process through their ``main`` (a subprocess costs seconds per start); the three
``subprocess`` rows check that the real command line behaves the same.
"""

import importlib.util
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog
from mmengine.config import Config
from torch import nn

import seg  # noqa: F401
import toydata
from backbone import EVA02ViT, load_checkpoint
from backbone.conversion import convert_file
from backbone.io import read_checkpoint
from backbone.overrides import checked_dotlist, checked_options
from det.datasets import load_checked_coco_json, register_all
from det.engine import AtomicCheckpointer, check_class_count, load_weights
from pretraining.recipes import recipe_config
from seg.launch import registered_type

ROOT = Path(__file__).resolve().parents[1]
DET_TOY = str(ROOT / "configs/det/toy/cascade_mask_rcnn_eva02_tiny_toy.py")
SEG_TOY = str(ROOT / "configs/seg/toy/upernet_eva02_tiny_toy.py")


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vit(width: int = 32) -> EVA02ViT:
    return EVA02ViT(img_size=32, patch_size=16, embed_dim=width, depth=2, num_heads=2)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toydata.generate(out, num_train=4, num_val=1, num_test=1, size=64, max_objects=2, seed=1)
    register_all(out, overwrite=True)
    return out


# ---------------------------------------------------------------- inputs (written under IN, never under WORK)
def _sd(inp: Path, name: str = "vit.pth", width: int = 32, bad: float | None = None, key: str = "") -> Path:
    state = _vit(width).state_dict()
    if bad is not None:
        state[key] = state[key].clone()
        state[key].view(-1)[0] = bad
    torch.save({"model": state}, inp / name)
    return inp / name


def _bytes(inp: Path, name: str, data: bytes) -> Path:
    (inp / name).write_bytes(data)
    return inp / name


def _coco(inp: Path, bbox: list, name: str = "ann.json") -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "area": 1, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (inp / name).write_text(json.dumps(data).replace("NaN", "NaN"))
    return inp / name


def _net_holder(width: int = 32) -> nn.Module:
    """A module with the ``backbone.net`` that ``det.engine.load_weights`` fills."""
    holder, holder.backbone = nn.Module(), nn.Module()
    holder.backbone.net = _vit(width)
    return holder


def _det_cfg(**changes):
    cfg = LazyConfig.load(DET_TOY)
    for key, value in changes.items():
        LazyConfig.apply_overrides(cfg, [f"{key}={value}"])
    return cfg


# ------------------------------------------------ rows: (id, call(inp, work), status, culprits)
# ``status``: an exit status (int) or the name of the exception the API raises. ``culprits``: strings the
# message must contain; "{inp}" is replaced by the input folder.
def _coco_load(path: Path) -> list:
    return load_checked_coco_json(str(path), str(path.parent), "x")


def _det_override(item: str) -> list:
    return checked_dotlist(LazyConfig.load(DET_TOY), [item])


def _seg_option(key: str) -> dict:
    return checked_options(Config.fromfile(SEG_TOY), {key: "x"}, registered_type)


def _convert(*extra):
    return lambda inp, work: _tool("convert_checkpoint").main(
        ["--input", str(_sd(inp)), "--output", str(work / "out.pth"), "--to", "det", *extra]
    )


def _convert_input(make):
    return lambda inp, work: _tool("convert_checkpoint").main(
        ["--input", str(make(inp)), "--output", str(work / "out.pth"), "--to", "eva02"]
    )


def _pretrain(*extra):
    return lambda inp, work: _tool("pretrain").main(
        ["--recipe", "toy", "--data", str(inp), "--output-dir", str(work / "pre"), *extra]
    )


def _det_train(*opts):
    return lambda inp, work: _tool("lazyconfig_train_net").invoke_main(
        ["--config-file", DET_TOY, f"train.output_dir={work}/det", *opts]
    )


def _seg_train(*opts):
    return lambda inp, work: _tool("seg_train").main(
        [SEG_TOY, "--work-dir", str(work / "seg"), "--cfg-options", *opts]
    )


def _seg_test(*opts):
    return lambda inp, work: _tool("seg_test").main(
        [SEG_TOY, str(_sd(inp)), "--work-dir", str(work / "seg"), "--cfg-options", *opts]
    )


def _seg_data(inp: Path, images: bool) -> list[str]:
    """``--cfg-options`` pointing every split of the toy config at ``inp``, with (or without) images."""
    for split in ("training", "validation"):
        (inp / "images" / split).mkdir(parents=True)
        if images:
            (inp / "images" / split / "a.jpg").write_bytes(b"")
    return [f"{k}_dataloader.dataset.data_root={inp}" for k in ("train", "val", "test")]


def _seg_train_on(images: bool, *opts):
    return lambda inp, work: _seg_train(*_seg_data(inp, images), *opts)(inp, work)


def _resume_payload(name: str):
    def call(inp, work):
        marker = inp / "pwned"
        data = {"model": {}, "trap": _Payload(marker)}
        with open(inp / name, "wb") as handle:
            (torch.save if name.endswith(".pth") else pickle.dump)(data, handle)
        (inp / "last_checkpoint").write_text(name)
        try:
            AtomicCheckpointer(nn.Linear(1, 1), str(inp)).resume_or_load("", resume=True)
        finally:
            assert not marker.exists(), "the payload ran"

    return call


NAN_KEY = "blocks.1.attn.proj.weight"

ROWS = [
    # -- checkpoint reading (the one safe reader), Python API
    ("read: missing file", lambda inp, work: read_checkpoint(inp / "absent.pth"), "CheckpointError",
     ["{inp}/absent.pth", "no such checkpoint file"]),
    ("read: empty file", lambda inp, work: read_checkpoint(_bytes(inp, "e.pth", b"")), "CheckpointError",
     ["{inp}/e.pth", "empty"]),
    ("read: random bytes", lambda inp, work: read_checkpoint(_bytes(inp, "r.pth", bytes(range(3, 250)) * 9)),
     "CheckpointError", ["{inp}/r.pth", "neither a zip archive nor a pickle"]),
    ("read: truncated", lambda inp, work: read_checkpoint(_bytes(inp, "t.pth", _sd(inp).read_bytes()[:3000])),
     "CheckpointError", ["{inp}/t.pth", "truncated or corrupt"]),
    ("read: pickled object", lambda inp, work: read_checkpoint(_bytes(inp, "o.pkl", pickle.dumps(print))),
     "CheckpointError", ["{inp}/o.pkl", "refusing to unpickle"]),
    ("read: NaN weight", lambda inp, work: read_checkpoint(_sd(inp, bad=math.nan, key=NAN_KEY)),
     "CheckpointError", ["{inp}/vit.pth", f"'model.{NAN_KEY}'", "NaN"]),
    ("read: inf weight", lambda inp, work: read_checkpoint(_sd(inp, bad=-math.inf, key="pos_embed")),
     "CheckpointError", ["{inp}/vit.pth", "'model.pos_embed'"]),
    ("load_checkpoint: NaN", lambda inp, work: load_checkpoint(_vit(), _sd(inp, bad=math.nan, key=NAN_KEY)),
     "CheckpointError", ["{inp}/vit.pth", NAN_KEY]),
    ("load_checkpoint: other width", lambda inp, work: load_checkpoint(_vit(), _sd(inp, width=64)),
     "CheckpointError", ["{inp}/vit.pth", "width 64"]),
    ("load_checkpoint: no tensors", lambda inp, work: load_checkpoint(_vit(), _bytes(inp, "n.pth", b"")),
     "CheckpointError", ["{inp}/n.pth"]),
    # -- detector weights and resume
    ("det load_weights: other width names the file",
     lambda inp, work: load_weights(_net_holder(), str(_sd(inp, width=64))), "CheckpointError",
     ["{inp}/vit.pth", "width 64"]),
    ("det load_weights: NaN",
     lambda inp, work: load_weights(_net_holder(), str(_sd(inp, bad=math.nan, key=NAN_KEY))),
     "CheckpointError", ["{inp}/vit.pth", NAN_KEY]),
    ("det resume: .pkl payload", _resume_payload("model_0000001.pkl"), "CheckpointError",
     ["model_0000001.pkl", "+train.trust_pickle=True"]),
    ("det resume: .pth payload", _resume_payload("model_0000001.pth"), "CheckpointError",
     ["model_0000001.pth", "refusing to unpickle"]),
    # -- detector data
    ("det data: annotation not JSON",
     lambda inp, work: _coco_load(_bytes(inp, "a.json", b"<xml/>")),
     "ValueError", ["{inp}/a.json", "not a JSON annotation file"]),
    ("det data: annotation missing", lambda inp, work: _coco_load(inp / "no.json"),
     "FileNotFoundError", ["{inp}/no.json"]),
    ("det data: negative box width",
     lambda inp, work: _coco_load(_coco(inp, [1, 1, -3, 2])),
     "ValueError", ["{inp}/ann.json", "[1, 1, -3, 2]"]),
    ("det data: NaN box", lambda inp, work: _coco_load(_coco(inp, [1, 1, math.nan, 2])),
     "ValueError", ["{inp}/ann.json", "nan"]),
    # -- overrides (the one override check)
    ("det override typo", lambda inp, work: _det_override("train.init_checkpont=m.pth"),
     "OverrideError", ["train.init_checkpont", "did you mean 'train.init_checkpoint'"]),
    ("det override unknown top-level key", lambda inp, work: _det_override("trainer.x=1"),
     "OverrideError", ["trainer.x", "did you mean 'train'"]),
    ("det override without =", lambda inp, work: _det_override("train.max_iter"),
     "OverrideError", ["train.max_iter", "key=value"]),
    ("seg cfg-options typo",
     lambda inp, work: _seg_option("model.backbone.pretraned"),
     "OverrideError", ["model.backbone.pretraned", "did you mean 'model.backbone.pretrained'"]),
    ("lazyconfig_train_net: override typo", _det_train("train.init_checkpont=m.pth"), 1,
     ["train.init_checkpont", "train.init_checkpoint"]),
    ("seg_train: cfg-options typo", _seg_train("train_cfg.max_iter=2"), 1,
     ["train_cfg.max_iter", "did you mean 'train_cfg.max_iters'"]),
    ("seg_test: cfg-options typo", _seg_test("test_dataloader.batchsize=1"), 1,
     ["test_dataloader.batchsize", "test_dataloader.batch_size"]),
    ("seg_train: missing data folder", _seg_train(*(f"{k}_dataloader.dataset.data_root=/nonexistent" for k in
     ("train", "val", "test"))), 1, ["/nonexistent/images/training", "does not exist"]),
    ("seg_train: empty data folder", _seg_train_on(False), 1,
     ["{inp}/images/training", "holds no *.jpg images"]),
    ("seg_train: fewer classes than the dataset", _seg_train_on(True, "model.decode_head.num_classes=2"), 1,
     ["model.decode_head.num_classes=2", "6 classes"]),
    # -- conversion
    ("convert --patch-size 0", _convert("--patch-size", "0"), 2, ["--patch-size 0"]),
    ("convert --pos-grid -2", _convert("--pos-grid", "-2"), 2, ["--pos-grid -2"]),
    ("convert --num-classes 0", _convert("--num-classes", "0"), 2, ["--num-classes 0"]),
    ("convert: NaN input", _convert_input(lambda inp: _sd(inp, bad=math.nan, key=NAN_KEY)), 2,
     ["{inp}/vit.pth", NAN_KEY]),
    ("convert: random bytes", _convert_input(lambda inp: _bytes(inp, "r.pt", b"\x01\x02junk" * 50)), 2,
     ["{inp}/r.pt", "neither a zip"]),
    ("convert_file API: --patch-size 0",
     lambda inp, work: convert_file(str(_sd(inp)), str(work / "o.pth"), "eva02", patch_size=0), "ValueError",
     ["--patch-size 0"]),
    # -- pre-training options
    ("pretrain --batch-size 0", _pretrain("--batch-size", "0"), 2, ["--batch-size 0", ">= 1"]),
    ("pretrain --lr nan", _pretrain("--lr", "nan"), 2, ["--lr nan", "finite"]),
    ("pretrain --num-workers -1", _pretrain("--num-workers", "-1"), 2, ["--num-workers -1"]),
    ("pretrain --epochs 0", _pretrain("--epochs", "0"), 2, ["--epochs 0"]),
    ("recipe_config API: drop_path 1.5", lambda inp, work: recipe_config("toy", drop_path=1.5), "ValueError",
     ["--drop-path 1.5"]),
]  # fmt: skip


def _outcome(call, inp: Path, work: Path, capsys) -> tuple[object, str]:
    try:
        status = call(inp, work) or 0
        message = ""
    except SystemExit as err:
        status, message = (1, err.code) if isinstance(err.code, str) else (err.code or 0, "")
    except Exception as err:  # the API rows: the exception type is the status
        status, message = type(err).__name__, str(err)
    return status, message + capsys.readouterr().err


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(row, tmp_path, capsys):
    _, call, want_status, culprits = row
    inp, work = tmp_path / "in", tmp_path / "work"
    inp.mkdir()
    work.mkdir()
    status, message = _outcome(call, inp, work, capsys)
    assert status == want_status, message
    for culprit in culprits:
        assert culprit.format(inp=inp) in message, (culprit, message)
    assert "Traceback" not in message
    assert sorted(work.rglob("*")) == [], "something was written"
    assert not list(inp.glob(".*.tmp"))


def test_class_count_below_the_dataset_is_refused_before_training(toy):
    DatasetCatalog.get("toy_coco_train")  # the categories are read with the annotations
    check_class_count(_det_cfg(**{"model.roi_heads.num_classes": 5}))
    with pytest.raises(ValueError, match=r"num_classes=3 but dataset 'toy_coco_train' has 5 categories"):
        check_class_count(_det_cfg(**{"model.roi_heads.num_classes": 3}))


# The command line itself, for a few rows: same status, same one-line message, no traceback.
SUBPROCESS_ROWS = [
    (["tools/convert_checkpoint.py", "--input", "IN/x.pth", "--output", "WORK/o.pth", "--to", "det",
      "--patch-size", "0"], 2, "--patch-size 0"),
    (["tools/pretrain.py", "--recipe", "toy", "--data", "IN", "--output-dir", "WORK/p", "--batch-size", "0"],
     2, "--batch-size 0"),
    (["tools/lazyconfig_train_net.py", "--config-file", DET_TOY, "train.output_dir=WORK/d",
      "train.init_checkpont=IN/x.pth"], 1, "did you mean 'train.init_checkpoint'"),
]  # fmt: skip


@pytest.mark.parametrize("argv, want_status, culprit", SUBPROCESS_ROWS, ids=["convert", "pretrain", "det"])
def test_bad_input_on_the_command_line(tmp_path, argv, want_status, culprit):
    inp, work = tmp_path / "in", tmp_path / "work"
    inp.mkdir()
    work.mkdir()
    _sd(inp, "x.pth")
    argv = [a.replace("IN/", f"{inp}/").replace("WORK/", f"{work}/") for a in argv]
    argv = [str(inp) if a == "IN" else a for a in argv]
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == want_status, proc.stderr[-2000:]
    assert culprit in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(work.rglob("*")) == []
