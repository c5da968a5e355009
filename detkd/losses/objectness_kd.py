"""Objectness-scaled distillation (Mehta & Ozturk 2018), on top of the YOLOv2 loss.

Per student cell and anchor, with the student's prediction ``(ô, p̂, b̂)``, ground truth
``(o_gt, p_gt, b_gt)``, the teacher's soft targets ``(o_T, p_T, b_T)`` and weight ``λ_D``:

    objectness      f_obj(o_gt, ô) + λ_D · f_obj(o_T, ô)            (not scaled)
    classification  f_cl(p_gt, p̂)  + ô_T · λ_D · f_cl(p_T, p̂)
    box             f_bb(b_gt, b̂)  + ô_T · λ_D · f_bb(b_T, b̂)

summed over cells and anchors. ``ô_T`` is the teacher's objectness probability ``o_T``: where the
teacher sees background its class and box outputs are noise, and the scaling keeps them out.

The ground-truth half is :func:`detkd.models.yolo_loss.yolo_loss` unchanged; the teacher half is
:func:`objectness_scaled_kd`, built from the same per-element terms
(:func:`~detkd.models.yolo_loss.obj_term`, :func:`~detkd.models.yolo_loss.cls_term`,
:func:`~detkd.models.yolo_loss.box_term`) with soft targets, so a student that matches the teacher
exactly pays 0 (all three are divergences, not cross-entropies). Both halves divide their sums by
the batch size B, so every term is a per-image total and the two halves stay on one scale.

The teacher terms carry no :class:`~detkd.models.yolo_loss.YoloLossWeights` multiplier: ``λ_D`` alone
weighs them, as in the paper (``λ_D = 1``).

Keys are named ``loss_kd_*`` because mmengine's ``BaseModel.parse_losses`` optimises exactly the
entries whose key contains ``"loss"``: the teacher terms are trained and logged like the others.
"""

from __future__ import annotations

from typing import Any

import torch

from detkd.models.yolo_loss import YoloLossWeights, box_term, cls_term, obj_term, yolo_loss
from detkd.ops.fm_nms import TeacherTargets

__all__ = ["combined_loss", "objectness_scaled_kd"]


def _check_shapes(student_raw: torch.Tensor, teacher: TeacherTargets) -> None:
    if student_raw.dim() != 5:
        raise ValueError(f"student_raw must be [B, A, S_h, S_w, 5 + K], got {tuple(student_raw.shape)}")
    grid, num_k = student_raw.shape[:4], student_raw.shape[4] - 5
    expected = {
        "obj": (teacher.obj, (*grid,)),
        "cls": (teacher.cls, (*grid, num_k)),
        "box": (teacher.box, (*grid, 4)),
        "cls_weight": (teacher.cls_weight, (*grid,)),
        "box_weight": (teacher.box_weight, (*grid,)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"teacher.{name} must be {shape} to match the student's output, got {tuple(tensor.shape)}")


def objectness_scaled_kd(
    student_raw: torch.Tensor,
    teacher: TeacherTargets,
    lambda_d: float = 1.0,
    scale_by_objectness: bool = True,
) -> dict[str, torch.Tensor]:
    """The teacher half of the objectness-scaled distillation loss.

    Args:
        student_raw: Float[B, A, S_h, S_w, 5 + K] the student's raw outputs
            ``(tx, ty, tw, th, obj logit, class logits)``.
        teacher: soft targets on the same grid (usually from
            :func:`detkd.ops.fm_nms.apply_fm_nms`); detached here, so no gradient reaches the
            teacher even if its tensors require grad.
        lambda_d: ``λ_D``, the weight of every teacher term.
        scale_by_objectness: multiply the class and box terms by the teacher's objectness
            ``teacher.obj`` (the paper); False is the ablation without it.

    Returns:
        ``loss_kd_obj``, ``loss_kd_cls``, ``loss_kd_box`` scalars: ``λ_D · Σ (per-element term) / B`` where the
        class term is weighted by ``ô_T · cls_weight`` and the box term by ``ô_T · box_weight``
        (``ô_T`` replaced by 1 when ``scale_by_objectness`` is False).
    """
    _check_shapes(student_raw, teacher)
    t_obj, t_cls, t_box = teacher.obj.detach(), teacher.cls.detach(), teacher.box.detach()
    scale = t_obj if scale_by_objectness else torch.ones_like(t_obj)
    cls_weight = scale * teacher.cls_weight.detach()
    box_weight = scale * teacher.box_weight.detach()
    bsz = student_raw.shape[0]
    return {
        "loss_kd_obj": lambda_d * obj_term(student_raw[..., 4], t_obj).sum() / bsz,
        "loss_kd_cls": lambda_d * (cls_weight * cls_term(student_raw[..., 5:], t_cls)).sum() / bsz,
        "loss_kd_box": lambda_d * box_term(student_raw[..., :4], t_box, box_weight).sum() / bsz,
    }


def _mark_labeled(targets: list[dict[str, Any]], labeled: torch.Tensor | None) -> list[dict[str, Any]]:
    """Targets whose ``labeled`` flag is the AND of their own flag and ``labeled`` (shallow copies)."""
    if labeled is None:
        return targets
    flags = torch.as_tensor(labeled, dtype=torch.bool).reshape(-1).tolist()
    if len(flags) != len(targets):
        raise ValueError(f"labeled has {len(flags)} entries for {len(targets)} targets")
    return [{**t, "labeled": bool(t.get("labeled", True)) and flag} for t, flag in zip(targets, flags, strict=True)]


def combined_loss(
    student_raw: torch.Tensor,
    targets: list[dict[str, Any]],
    teacher: TeacherTargets,
    anchors: torch.Tensor,
    stride: int,
    weights: YoloLossWeights | None = None,
    lambda_d: float = 1.0,
    scale_by_objectness: bool = True,
    labeled: torch.Tensor | None = None,
    ignore_thr: float = 0.6,
) -> dict[str, torch.Tensor]:
    """Ground-truth YOLOv2 terms plus the teacher terms of :func:`objectness_scaled_kd`.

    Unlabeled images contribute only teacher terms: they are passed to
    :func:`~detkd.models.yolo_loss.yolo_loss` with ``labeled=False``, which gives them no ground-truth
    term (positive, no-object, class or box) while still dividing by the whole batch size, the
    same B that divides the teacher terms.

    Args:
        student_raw: Float[B, A, S_h, S_w, 5 + K] raw student outputs.
        targets: B ground-truth dicts as for :func:`~detkd.models.yolo_loss.yolo_loss` (boxes of an
            unlabeled image are ignored).
        teacher: the teacher's soft targets on the student's grid.
        anchors: Float[A, 2] the student's anchors (width, height) in pixels.
        stride: pixels per cell of the student's grid.
        weights: multipliers of the ground-truth terms (default :class:`YoloLossWeights`).
        lambda_d, scale_by_objectness: see :func:`objectness_scaled_kd`.
        labeled: optional Bool[B]; an image counts as labeled iff this and its target's own
            ``labeled`` flag (default True) are both True.
        ignore_thr: see :func:`~detkd.models.yolo_loss.build_targets`.

    Returns:
        ``loss_obj``, ``loss_noobj``, ``loss_cls``, ``loss_box`` (ground truth) and ``loss_kd_obj``,
        ``loss_kd_cls``, ``loss_kd_box`` (teacher) scalars; the training objective is their sum.
    """
    gt_terms = yolo_loss(student_raw, _mark_labeled(targets, labeled), anchors, stride, weights, ignore_thr)
    return {**gt_terms, **objectness_scaled_kd(student_raw, teacher, lambda_d, scale_by_objectness)}
