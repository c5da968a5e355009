"""Output distillation between two SSDs that share their default boxes (a pruned SSD and its unpruned self).

Pruning removes filters, never default boxes, so the pruned student and its unpruned teacher predict
for the same ``N`` anchors and the outputs compare anchor by anchor. Two terms, on top of the SSD
MultiBox loss:

- ``loss_kd_cls``: Hinton KD on every default box's class distribution (background included),
  ``τ² · KL(softmax(t/τ) || softmax(s/τ))`` summed over the ``K + 1`` classes (:func:`detkd.losses.kd.hinton_kd`).
- ``loss_kd_box``: smooth-L1 between the student's and the teacher's box-coder offsets, weighted per
  box by the teacher's foreground probability ``p_fg = 1 - softmax(t)[..., 0]`` (at τ = 1). This is
  Mehta & Ozturk's objectness scaling carried over to SSD: regress the teacher's boxes where the
  teacher sees an object, not where it sees background (its offsets there are arbitrary).

Both sums are divided by ``max(1, Σ p_fg)`` over the batch, the teacher's soft count of positive
boxes, as the MultiBox loss divides by the number of matched boxes; the two terms are thus on the
scale of ``loss_cls`` / ``loss_box``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from detkd.losses.kd import hinton_kd

__all__ = ["ssd_output_distill"]


def ssd_output_distill(
    student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor], tau: float = 2.0,
    cls_weight: float = 1.0, box_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """The two distillation terms (see the module docstring).

    Args:
        student, teacher: SSD outputs ``{"bbox_regression": Float[B, N, 4]`` (box-coder offsets to
            the default boxes), ``"cls_logits": Float[B, N, K + 1]}`` (column 0 = background); the
            teacher's are detached here.
        tau: KD temperature for the class term.
        cls_weight, box_weight: multipliers of the two terms.

    Returns:
        ``{"loss_kd_cls": scalar, "loss_kd_box": scalar}``.

    Raises:
        ValueError: the two SSDs differ in anchors or classes (shapes differ).
    """
    s_cls, t_cls = student["cls_logits"], teacher["cls_logits"].detach()
    s_box, t_box = student["bbox_regression"], teacher["bbox_regression"].detach()
    if s_cls.shape != t_cls.shape or s_box.shape != t_box.shape:
        raise ValueError(f"student and teacher SSDs differ in default boxes or classes: cls {tuple(s_cls.shape)} vs "
                         f"{tuple(t_cls.shape)}, boxes {tuple(s_box.shape)} vs {tuple(t_box.shape)}")
    p_fg = 1.0 - t_cls.float().softmax(dim=-1)[..., 0]  # [B, N]
    norm = p_fg.sum().clamp_min(1.0)
    kd = hinton_kd(s_cls.float(), t_cls.float(), tau=tau, reduction="sum") / norm
    box = (F.smooth_l1_loss(s_box.float(), t_box.float(), reduction="none").sum(-1) * p_fg).sum() / norm
    return {"loss_kd_cls": cls_weight * kd, "loss_kd_box": box_weight * box}
