"""EVA-CLIP teachers through timm's Eva, loaded from files in the original release layouts."""

import pickle
import re

import pytest
import timm
import torch

from pretraining import TeacherError, build_teacher
from pretraining.teacher import save_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


def _to_original_eva_clip(sd):
    """timm Eva names -> the EVA-CLIP release names (``visual.`` tower), as the released .pt files have."""
    out = {}
    for k, v in sd.items():
        k = k.replace("mlp.norm.", "mlp.ffn_ln.").replace("attn.norm.", "attn.inner_attn_ln.")
        k = k.replace("mlp.fc1_g.", "mlp.w1.").replace("mlp.fc1_x.", "mlp.w2.").replace("mlp.fc2.", "mlp.w3.")
        k = re.sub(r"attn\.([qv])_proj\.bias", r"attn.\1_bias", k)
        out["visual." + k] = v.half()  # released EVA-CLIP weights are fp16
    out["visual.rope.freqs_cos"] = torch.zeros(3, 5)  # a stale RoPE buffer of another shape (upstream #56)
    out["text.token_embedding.weight"] = torch.zeros(10, 4)
    out["logit_scale"] = torch.tensor(4.6)
    return out


def _reference(arch, num_classes, **kw):
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kw).eval()
    with torch.no_grad():  # round like the fp16 file
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def _targets(model, x):
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
        return tokens @ model.head.weight.T + model.head.bias


def test_eva02_clip_b16_from_original_file(tmp_path):
    ref = _reference("eva02_base_patch16_clip_224", 512, depth=2)
    path = tmp_path / "EVA02_CLIP_B_psz16_s8B.pt"
    torch.save({"module": _to_original_eva_clip(ref.state_dict())}, path)
    x = torch.randn(2, 3, 224, 224)
    teacher = build_teacher("eva02_clip_b16", (14, 14), str(path), depth=2)
    assert teacher.out_dim == 512 and teacher.patch_size == 16
    torch.testing.assert_close(teacher(x), _targets(ref, x), rtol=1e-5, atol=1e-5)
    # a patch-14 student has a 16 x 16 grid: the teacher then runs at 256 px (pos-embed resized)
    teacher16 = build_teacher("eva02_clip_b16", (16, 16), str(path), depth=2)
    assert teacher16(torch.randn(1, 3, 256, 256)).shape == (1, 256, 512)
    assert not any(p.requires_grad for p in teacher16.parameters())


def test_eva01_clip_g14_from_original_file(tmp_path):
    ref = _reference("eva_giant_patch14_clip_224", 1024, depth=1)
    path = tmp_path / "eva_clip_psz14.pt"
    torch.save(_to_original_eva_clip(ref.state_dict()), path)
    teacher = build_teacher("eva01_clip_g14", (16, 16), str(path), depth=1)
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(teacher(x), _targets(ref, x), rtol=1e-4, atol=1e-4)
    assert teacher(x).shape == (1, 256, 1024)


def test_wrong_teacher_file_and_bad_files(tmp_path):
    ref = _reference("eva02_base_patch16_clip_224", 512, depth=1)
    path = tmp_path / "b16.pt"
    torch.save(_to_original_eva_clip(ref.state_dict()), path)
    with pytest.raises(TeacherError, match="shape mismatches"):
        build_teacher("eva02_clip_l14", (16, 16), str(path), depth=1)
    with pytest.raises(TeacherError, match="--teacher-ckpt"):
        build_teacher("eva01_clip_g14", (16, 16), None)
    with pytest.raises(TeacherError, match="not found"):
        build_teacher("eva02_clip_l14", (16, 16), str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps(object(), protocol=2))
    with pytest.raises(TeacherError, match="junk.pt"):
        build_teacher("eva02_clip_b16", (14, 14), str(junk), depth=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(TeacherError, match="truncated"):
        build_teacher("eva02_clip_b16", (14, 14), str(truncated), depth=1)
    with pytest.raises(TeacherError, match="unknown teacher"):
        build_teacher("clip_vit_h", (16, 16), None)


def test_tiny_teacher_is_seeded_frozen_and_saves(tmp_path):
    a = build_teacher("tiny", (4, 4), seed=3)
    b = build_teacher("tiny", (4, 4), seed=3)
    c = build_teacher("tiny", (4, 4), seed=4)
    x = torch.randn(2, 3, 56, 56)
    a.train()
    assert not a.training and not a.model.training
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert not torch.allclose(a(x), c(x))
    save_teacher(a, str(tmp_path / "tiny.pt"))
    d = build_teacher("tiny", (4, 4), str(tmp_path / "tiny.pt"), seed=99)
    torch.testing.assert_close(d(x), a(x), rtol=0, atol=0)


def test_eva02_clip_l14_from_original_file(tmp_path):
    ref = _reference("eva02_large_patch14_clip_224", 768, depth=1)
    path = tmp_path / "EVA02_CLIP_L_psz14_s4B.pt"
    torch.save(_to_original_eva_clip(ref.state_dict()), path)
    teacher = build_teacher("eva02_clip_l14", (16, 16), str(path), depth=1)
    x = torch.randn(1, 3, 224, 224)
    assert teacher.out_dim == 768
    torch.testing.assert_close(teacher(x), _targets(ref, x), rtol=1e-4, atol=1e-4)
