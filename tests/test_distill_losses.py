"""Objectness-scaled distillation, classic KD terms and FitNets hints on tiny hand-built tensors."""

from __future__ import annotations

import math

import pytest
import torch

from detkd.losses.hint import HintRegressor, hint_loss
from detkd.losses.kd import hinton_kd, logit_l2, noisy_teacher
from detkd.losses.objectness_kd import combined_loss, objectness_scaled_kd
from detkd.models.yolo_loss import yolo_loss
from detkd.ops.fm_nms import TeacherTargets

B, A, S, K = 2, 2, 2, 3
STRIDE = 32
ANCHORS = torch.tensor([[20.0, 20.0], [40.0, 40.0]])
KD_KEYS = ("loss_kd_obj", "loss_kd_cls", "loss_kd_box")


def random_teacher(seed: int = 0, obj: float | None = None) -> TeacherTargets:
    gen = torch.Generator().manual_seed(seed)
    t_obj = torch.rand(B, A, S, S, generator=gen) * 0.8 + 0.1 if obj is None else torch.full((B, A, S, S), obj)
    t_cls = torch.softmax(torch.randn(B, A, S, S, K, generator=gen), dim=-1)
    t_xy = torch.rand(B, A, S, S, 2, generator=gen) * 0.8 + 0.1
    t_box = torch.cat((t_xy, torch.randn(B, A, S, S, 2, generator=gen)), -1)
    ones = torch.ones(B, A, S, S)
    return TeacherTargets(t_obj, t_cls, t_box, ones, ones.clone())


def student_like(teacher: TeacherTargets) -> torch.Tensor:
    """Raw outputs whose sigmoid/softmax reproduce the teacher exactly."""
    xy = torch.logit(teacher.box[..., :2].double())
    obj = torch.logit(teacher.obj.double())[..., None]
    return torch.cat((xy, teacher.box[..., 2:].double(), obj, teacher.cls.double().log()), -1)


def random_student(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, A, S, S, 5 + K, generator=torch.Generator().manual_seed(seed))


def test_kd_is_zero_when_student_equals_teacher() -> None:
    t = random_teacher()
    # float32 softmax rows sum to 1 only within 1e-7; renormalised in float64 they sum to 1
    cls = t.cls.double() / t.cls.double().sum(-1, keepdim=True)
    teacher = TeacherTargets(t.obj.double(), cls, t.box.double(), t.cls_weight.double(), t.box_weight.double())
    terms = objectness_scaled_kd(student_like(teacher), teacher)
    for key in KD_KEYS:
        assert terms[key].item() == pytest.approx(0.0, abs=1e-12)


def test_kd_matches_hand_computation_on_one_cell() -> None:
    # student raw all 0: sigmoid = 0.5, tw = th = 0, uniform classes over K = 2
    student = torch.zeros(1, 1, 1, 1, 7)
    teacher = TeacherTargets(
        obj=torch.full((1, 1, 1, 1), 0.8),
        cls=torch.tensor([1.0, 0.0]).view(1, 1, 1, 1, 2),
        box=torch.tensor([0.75, 0.25, 1.0, -1.0]).view(1, 1, 1, 1, 4),
        cls_weight=torch.ones(1, 1, 1, 1),
        box_weight=torch.ones(1, 1, 1, 1),
    )
    terms = objectness_scaled_kd(student, teacher, lambda_d=1.0)
    kl_obj = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert terms["loss_kd_obj"].item() == pytest.approx(kl_obj, rel=1e-5)
    assert terms["loss_kd_cls"].item() == pytest.approx(0.8 * math.log(2.0), rel=1e-5)
    assert terms["loss_kd_box"].item() == pytest.approx(0.8 * (0.0625 + 0.0625 + 1.0 + 1.0), rel=1e-5)


def test_cls_and_box_are_scaled_exactly_by_teacher_objectness() -> None:
    teacher, student = random_teacher(obj=0.25), random_student()
    on = objectness_scaled_kd(student, teacher, scale_by_objectness=True)
    off = objectness_scaled_kd(student, teacher, scale_by_objectness=False)
    # 0.25 is a power of two: scaling commutes with float rounding, so equality is exact
    assert torch.equal(on["loss_kd_cls"], 0.25 * off["loss_kd_cls"])
    assert torch.equal(on["loss_kd_box"], 0.25 * off["loss_kd_box"])
    assert torch.equal(on["loss_kd_obj"], off["loss_kd_obj"])  # objectness is never scaled
    assert off["loss_kd_cls"] > 0 and off["loss_kd_box"] > 0


def test_lambda_scales_every_teacher_term_linearly() -> None:
    teacher, student = random_teacher(), random_student()
    one = objectness_scaled_kd(student, teacher, lambda_d=1.0)
    three = objectness_scaled_kd(student, teacher, lambda_d=3.0)
    for key in KD_KEYS:
        assert torch.allclose(three[key], 3.0 * one[key])


def test_weights_mask_class_and_box_terms() -> None:
    teacher, student = random_teacher(), random_student()
    zeros = torch.zeros(B, A, S, S)
    masked = objectness_scaled_kd(student, TeacherTargets(teacher.obj, teacher.cls, teacher.box, zeros, zeros))
    full = objectness_scaled_kd(student, teacher)
    assert masked["loss_kd_cls"].item() == 0.0 and masked["loss_kd_box"].item() == 0.0
    assert torch.equal(masked["loss_kd_obj"], full["loss_kd_obj"])


def test_teacher_shape_mismatch_is_an_error() -> None:
    teacher = random_teacher()
    with pytest.raises(ValueError, match="teacher.cls"):
        objectness_scaled_kd(torch.zeros(B, A, S, S, 5 + K + 1), teacher)


def gt_targets() -> list[dict]:
    return [
        {"boxes": torch.tensor([[4.0, 4.0, 28.0, 28.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[30.0, 30.0, 60.0, 60.0]]), "labels": torch.tensor([2])},
    ]


def test_unlabeled_images_contribute_only_teacher_terms() -> None:
    teacher, student = random_teacher(), random_student()
    terms = combined_loss(student, gt_targets(), teacher, ANCHORS, STRIDE, labeled=torch.tensor([True, False]))
    # the labeled image alone, normalised by the whole batch of 2 instead of 1
    alone = yolo_loss(student[:1], gt_targets()[:1], ANCHORS, STRIDE)
    for key, value in alone.items():
        assert torch.allclose(terms[key], value / 2)
    kd = objectness_scaled_kd(student, teacher)
    for key in KD_KEYS:
        assert torch.equal(terms[key], kd[key])
    # the target's own flag counts the same as the argument
    targets = gt_targets()
    targets[1]["labeled"] = False
    flagged = combined_loss(student, targets, teacher, ANCHORS, STRIDE)
    assert all(torch.equal(flagged[k], terms[k]) for k in terms)


def test_all_unlabeled_batch_has_no_ground_truth_terms() -> None:
    teacher, student = random_teacher(), random_student()
    terms = combined_loss(student, gt_targets(), teacher, ANCHORS, STRIDE, labeled=torch.tensor([False, False]))
    assert set(terms) == {"loss_obj", "loss_noobj", "loss_cls", "loss_box", *KD_KEYS}
    assert all(terms[k].item() == 0.0 for k in ("loss_obj", "loss_noobj", "loss_cls", "loss_box"))
    assert all(terms[k].item() > 0.0 for k in KD_KEYS)


@pytest.mark.parametrize("teacher_requires_grad", [False, True])
def test_gradients_reach_the_student_only(teacher_requires_grad: bool) -> None:
    teacher = random_teacher()
    for t in (teacher.obj, teacher.cls, teacher.box):
        t.requires_grad_(teacher_requires_grad)
    snapshot = [t.detach().clone() for t in (teacher.obj, teacher.cls, teacher.box)]
    student = random_student().requires_grad_(True)
    terms = combined_loss(student, gt_targets(), teacher, ANCHORS, STRIDE, lambda_d=1.0)
    torch.stack(list(terms.values())).sum().backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    for t, before in zip((teacher.obj, teacher.cls, teacher.box), snapshot, strict=True):
        assert t.grad is None and torch.equal(t.detach(), before)


def test_hinton_kd_two_classes_by_hand() -> None:
    # tau = 2: teacher logits (2 log 3, 0) / 2 -> p_T = (3/4, 1/4); student uniform (1/2, 1/2)
    teacher = torch.tensor([[2 * math.log(3.0), 0.0], [0.0, 0.0]])
    student = torch.zeros(2, 2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    per = hinton_kd(student, teacher, tau=2.0, reduction="none")
    assert torch.allclose(per, torch.tensor([4 * kl, 0.0]))
    assert hinton_kd(student, teacher, tau=2.0).item() == pytest.approx(4 * kl / 2, rel=1e-6)
    assert hinton_kd(student, teacher, tau=2.0, reduction="sum").item() == pytest.approx(4 * kl, rel=1e-6)
    weighted = hinton_kd(student, teacher, tau=2.0, weight=torch.tensor([0.5, 1.0]))
    assert weighted.item() == pytest.approx(0.5 * 4 * kl / 2, rel=1e-6)


def test_hinton_kd_gives_no_nan_for_impossible_teacher_class() -> None:
    teacher = torch.tensor([[0.0, -math.inf]])
    student = torch.zeros(1, 2, requires_grad=True)
    loss = hinton_kd(student, teacher, tau=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert torch.isfinite(student.grad).all()


def test_logit_l2_by_hand() -> None:
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.zeros(2, 2)
    assert torch.allclose(logit_l2(student, teacher, reduction="none"), torch.tensor([2.5, 0.0]))
    assert logit_l2(student, teacher).item() == pytest.approx(1.25)
    assert logit_l2(student, teacher, weight=torch.tensor([0.0, 1.0])).item() == 0.0


def test_noisy_teacher_identity_and_determinism() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    assert noisy_teacher(logits, 0.0) is logits
    first = noisy_teacher(logits, 0.3, torch.Generator().manual_seed(7))
    second = noisy_teacher(logits, 0.3, torch.Generator().manual_seed(7))
    assert torch.equal(first, second) and not torch.equal(first, logits)
    masked = noisy_teacher(logits, 0.3, torch.Generator().manual_seed(7), weight=torch.tensor([1.0, 0.0]))
    assert torch.equal(masked[0], first[0]) and torch.equal(masked[1], logits[1])
    # multiplicative noise leaves zero logits at zero
    relative = noisy_teacher(logits, 0.3, torch.Generator().manual_seed(7), relative=True)
    assert relative[1, 0].item() == 0.0 and not torch.equal(relative, logits)


def test_hint_regressor_shapes() -> None:
    reg = HintRegressor(3, 5, kernel_size=3)
    feat = torch.randn(2, 3, 4, 6)
    assert reg(feat).shape == (2, 5, 4, 6)
    assert reg(feat, size=(2, 3)).shape == (2, 5, 2, 3)
    with pytest.raises(ValueError, match="odd"):
        HintRegressor(3, 5, kernel_size=2)


def test_hint_loss_by_hand_and_zero_at_match() -> None:
    teacher = torch.zeros(2, 1, 1, 2)
    assert hint_loss(teacher, teacher.clone()).item() == 0.0
    # 4 values off by 1: 0.5 * 4 / batch of 2
    assert hint_loss(teacher, torch.ones(2, 1, 1, 2)).item() == pytest.approx(1.0)
    reg = HintRegressor(3, 1)
    loss = hint_loss(teacher, reg(torch.randn(2, 3, 1, 2)))
    loss.backward()
    assert reg.conv.weight.grad is not None
