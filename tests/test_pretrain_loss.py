"""The distillation loss is exactly -cos on masked tokens; the student predicts only those."""

import math

import pytest
import torch

from backbone import build_backbone
from pretraining import MIMStudent, neg_cosine_loss, released_init

pytestmark = pytest.mark.usefixtures("one_thread")


def _student(target_dim=24, **kw):
    torch.manual_seed(0)
    vit = build_backbone("eva02_tiny", img_size=56, depth=2, **kw)
    student = MIMStudent(vit, target_dim)
    released_init(student)
    return student.eval()


def test_loss_is_negative_mean_cosine_by_hand():
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    # cosines by hand: 0, 1, -1 -> mean 0 -> loss -0
    assert neg_cosine_loss(pred, target).item() == pytest.approx(0.0, abs=1e-7)
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    expected = -(1 / math.sqrt(2) + 1.0) / 2
    assert neg_cosine_loss(pred, target).item() == pytest.approx(expected, abs=1e-7)


def test_loss_is_float32_for_half_inputs():
    torch.manual_seed(1)
    pred, target = torch.randn(50, 1024).bfloat16(), torch.randn(50, 1024).bfloat16()
    loss = neg_cosine_loss(pred, target)
    assert loss.dtype == torch.float32
    p, t = pred.double(), target.double()
    ref = -((p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1))).mean()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-6)


def test_student_predicts_masked_tokens_only_and_loss_matches_full_map():
    student = _student()
    images = torch.randn(2, 3, 56, 56)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [1, 2, 5]] = True
    mask[1, [0, 15]] = True
    pred = student(images, mask)
    assert pred.shape == (5, 24)
    full = student.lm_head(student.forward_features(images, mask))  # (B, N, D) on every token
    torch.testing.assert_close(pred, full[mask], rtol=0, atol=1e-5)  # same rows, another GEMM shape
    target = torch.randn(2, 16, 24)
    t = target[mask]
    ref = -torch.stack([torch.dot(a, b) / (a.norm() * b.norm()) for a, b in zip(pred, t)]).mean()
    assert neg_cosine_loss(pred, t).item() == pytest.approx(ref.item(), abs=1e-6)


def test_mask_token_replaces_masked_patches():
    student = _student()
    images = torch.randn(1, 3, 56, 56)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 3] = True
    base = student.forward_features(images, mask)
    changed = images.clone()
    changed[..., 0:14, 42:56] += 5.0  # patch (0, 3) is masked: the student cannot see it
    torch.testing.assert_close(student.forward_features(changed, mask), base, rtol=0, atol=0)
    changed = images.clone()
    changed[..., 0:14, 0:14] += 5.0  # patch (0, 0) is visible
    assert not torch.allclose(student.forward_features(changed, mask), base)


def test_released_init_statistics():
    torch.manual_seed(0)
    vit = build_backbone("eva02_base", img_size=56, depth=4)
    student = MIMStudent(vit, 64)
    released_init(student)
    blk = vit.blocks[0]
    c, h = vit.embed_dim, blk.mlp.hidden_dim
    scale = math.sqrt(math.log(2 * 4))
    q = blk.attn.qkv.weight[:c]
    v = blk.attn.qkv.weight[2 * c :]
    assert q.std().item() == pytest.approx(math.sqrt(2 / (2 * c)), rel=0.03)  # one (C, C) projection's fan
    assert v.std().item() == pytest.approx(scale * math.sqrt(2 / (2 * c)), rel=0.03)  # sub-LN rescale
    assert blk.mlp.w12.weight.std().item() == pytest.approx(scale * math.sqrt(2 / (c + h)), rel=0.03)
    assert blk.mlp.w3.weight.std().item() == pytest.approx(scale * math.sqrt(2 / (c + h)), rel=0.03)
    assert blk.attn.proj.weight.std().item() == pytest.approx(scale * math.sqrt(2 / (2 * c)), rel=0.03)
    assert student.lm_head.weight.std().item() == pytest.approx(math.sqrt(2 / (c + 64)), rel=0.05)
    for p in (vit.pos_embed, vit.cls_token, student.mask_token):
        assert p.abs().max().item() <= 0.02
    assert float(blk.attn.q_bias.detach().abs().sum()) == 0.0


def test_tiny_and_small_are_not_rescaled():
    torch.manual_seed(0)
    vit = build_backbone("eva02_small", img_size=56, depth=2)
    student = MIMStudent(vit, 16)
    released_init(student)
    c = vit.embed_dim
    w12 = vit.blocks[0].mlp.w12.weight  # fused (2H, C), as released for tiny/small
    assert w12.std().item() == pytest.approx(math.sqrt(2 / (c + w12.shape[0])), rel=0.03)


def test_student_rejects_bad_geometry():
    with pytest.raises(ValueError, match="use_cls_token=True"):
        MIMStudent(build_backbone("eva02_tiny", img_size=56, depth=1, use_cls_token=False), 8)
    student = _student()
    with pytest.raises(ValueError, match="mask shape"):
        student(torch.randn(1, 3, 56, 56), torch.zeros(1, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        student(torch.randn(1, 3, 50, 56), torch.zeros(1, 16, dtype=torch.bool))
