"""Feature-map NMS (FM-NMS, Mehta & Ozturk 2018) on a teacher's output map in the student's space.

A teacher map holds, per image, anchor and cell of the *student's* output grid, the teacher's
objectness probability, class distribution and encoded box (see :class:`TeacherMap`). Many
neighbouring candidates of a trained detector describe the same object; distilling all of them
would tell the student about that object many times. FM-NMS keeps one candidate per class and
neighbourhood:

**Neighbourhood.** Two candidates are neighbours when their cells are at most ``kernel // 2``
cells apart along rows *and* along columns (Chebyshev distance), whatever their anchors; so the
``kernel x kernel`` window centred on a candidate's cell, all anchors included. Cells outside the
grid do not exist (nothing is padded in).

**Rule.** A candidate is suppressed iff a neighbour of the same argmax class *outranks* it; it is
kept otherwise. Candidates are ranked by objectness, higher first; equal objectness is broken by
the *lowest flat index* ``(a * S_h + row) * S_w + col`` within the image (anchor, then row, then
column), so exactly one of two tied neighbours survives. The argmax class itself is
``torch.argmax`` over the class dimension (ties go to the lowest class index).

This is "suppressed by any stronger neighbour", not greedy NMS: a candidate that is itself
suppressed still suppresses its weaker neighbours (with three candidates in a row, A > B > C, where
A and C are 2 cells apart, both B and C are suppressed for ``kernel=3``). It needs no sequential
pass, which is what lets it run as one max-pool.

What a suppressed candidate loses is :func:`apply_fm_nms`'s ``mode``; the default ``"class"`` is
the paper's: only its class probabilities are zeroed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["FMNMSMode", "TeacherMap", "TeacherTargets", "apply_fm_nms", "fm_nms", "fm_nms_targets"]

FMNMSMode = Literal["class", "class_box", "all"]


@dataclass
class TeacherMap:
    """A teacher's predictions on the student's output grid (all probabilities, no logits).

    Attributes:
        obj: Float[B, A, S_h, S_w] objectness probability in [0, 1].
        cls: Float[B, A, S_h, S_w, K] class probabilities (conditional on an object).
        box: Float[B, A, S_h, S_w, 4] encoded ``(sigmoid(tx), sigmoid(ty), tw, th)`` targets,
            as in :mod:`detkd.models.box_coder`.
        valid: optional Bool[B, A, S_h, S_w]; False where the teacher put no candidate (a teacher of
            another head projected onto the grid leaves slots empty). Empty slots keep their
            objectness target (0: "no object here") but their class and box weights are 0.
        cls_logits: optional Float[B, A, S_h, S_w, K] the teacher's class logits, for terms on
            logits (Hinton KD, logit L2); a projected teacher gives ``log(cls)``.
    """

    obj: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor
    valid: torch.Tensor | None = None
    cls_logits: torch.Tensor | None = None

    def weight(self) -> torch.Tensor:
        """Float[B, A, S_h, S_w]: 1 where the slot holds a candidate, else 0."""
        return torch.ones_like(self.obj) if self.valid is None else self.valid.to(self.obj.dtype)

    def logits(self) -> torch.Tensor:
        """Float[B, A, S_h, S_w, K]: ``cls_logits``, or ``log(cls)`` (clamped at 1e-6) when the teacher gave none."""
        return self.cls_logits if self.cls_logits is not None else torch.log(self.cls.clamp(min=1e-6))


@dataclass
class TeacherTargets:
    """Soft targets for :func:`detkd.losses.objectness_kd.objectness_scaled_kd`.

    Attributes:
        obj: Float[B, A, S_h, S_w] objectness target in [0, 1]; also the ``ô_T`` that scales the
            class and box terms.
        cls: Float[B, A, S_h, S_w, K] class target (rows of suppressed candidates may be all 0).
        box: Float[B, A, S_h, S_w, 4] encoded box target.
        cls_weight: Float[B, A, S_h, S_w] per-element multiplier of the class term.
        box_weight: Float[B, A, S_h, S_w] per-element multiplier of the box term.
    """

    obj: torch.Tensor
    cls: torch.Tensor
    box: torch.Tensor
    cls_weight: torch.Tensor
    box_weight: torch.Tensor

    @classmethod
    def from_map(cls, teacher: TeacherMap) -> TeacherTargets:
        """Targets without FM-NMS: the teacher's tensors as they are, weight 1 on every filled slot."""
        weight = teacher.weight()
        return cls(teacher.obj, teacher.cls, teacher.box, weight, weight.clone())


def _rank_keys(obj: torch.Tensor) -> torch.Tensor:
    """A unique sortable key per candidate: ``-rank`` within its image (0 for the strongest).

    Args:
        obj: Float[B, N] objectness, N = A * S_h * S_w in flat ``(a, row, col)`` order.

    Returns:
        Float[B, N]; larger = outranks. Float64 once N could exceed float32's exact integers.
    """
    # a stable descending sort keeps equal objectness in flat-index order: lowest index ranks first
    order = torch.sort(obj, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(obj.shape[1], device=obj.device).expand_as(order))
    dtype = torch.float32 if obj.shape[1] < 2**24 else torch.float64
    return -ranks.to(dtype)


def fm_nms(obj: torch.Tensor, cls: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Which candidates survive FM-NMS (definition in the module docstring).

    Args:
        obj: Float[B, A, S_h, S_w] objectness (any monotone score works: only its order is used).
        cls: Float[B, A, S_h, S_w, K] class scores; only the argmax is used.
        kernel: odd window size in cells (the paper's 3); 1 compares only the anchors of a cell.

    Returns:
        Bool[B, A, S_h, S_w], True where the candidate keeps its targets.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd number, got {kernel}")
    if cls.shape[:-1] != obj.shape or obj.dim() != 4:
        shapes = f"{tuple(obj.shape)}, {tuple(cls.shape)}"
        raise ValueError(f"expected obj [B, A, S_h, S_w] and cls [B, A, S_h, S_w, K], got {shapes}")
    bsz, num_a, s_h, s_w = obj.shape
    # NaN objectness would make the sort order undefined; such a candidate ranks last instead
    score = torch.nan_to_num(obj.detach(), nan=-float("inf")).reshape(bsz, -1)
    key = _rank_keys(score).reshape(bsz, num_a, s_h, s_w)
    label = cls.detach().argmax(dim=-1)  # [B, A, S_h, S_w]

    # one channel per class: the key where the candidate predicts that class, -inf elsewhere
    classes = torch.arange(cls.shape[-1], device=label.device).view(1, -1, 1, 1, 1)
    is_class = label[:, None] == classes  # Bool[B, K, A, S_h, S_w]
    per_class = key[:, None].masked_fill(~is_class, -float("inf"))
    best_in_cell = per_class.amax(dim=2)  # [B, K, S_h, S_w]: across the anchors of each cell
    # max_pool2d pads with -inf, so cells outside the grid never win
    best_near = F.max_pool2d(best_in_cell, kernel, stride=1, padding=kernel // 2)
    # gather along the class dim: out[b, a, i, j] = best_near[b, label[b, a, i, j], i, j]
    best_for_own_class = best_near.gather(1, label)
    # keys are unique per image, so equality means "this candidate outranks every same-class neighbour"
    return key == best_for_own_class


@dataclass
class _Suppression:
    """What a mode takes from suppressed candidates."""

    box: bool
    obj: bool


_SUPPRESSES: dict[str, _Suppression] = {
    "class": _Suppression(box=False, obj=False),
    "class_box": _Suppression(box=True, obj=False),
    "all": _Suppression(box=True, obj=True),
}


def apply_fm_nms(
    obj: torch.Tensor,
    cls: torch.Tensor,
    box: torch.Tensor,
    keep: torch.Tensor,
    mode: FMNMSMode = "class",
) -> TeacherTargets:
    """Turn a teacher map and an FM-NMS ``keep`` mask into soft targets; inputs are not modified.

    Suppressed candidates (``keep`` False) lose, by ``mode``:

    - ``"class"`` (default, the paper): class probabilities set to 0 and class weight 0.
    - ``"class_box"``: also box weight 0 (the box target tensor itself is left as it is).
    - ``"all"``: also objectness target 0, so the student is taught "no object" there, the way
      a detector's NMS would have removed the candidate.

    Kept candidates keep every target with weight 1. Zeroing the class row and zeroing its weight
    are redundant for the KL class term (a zero target row costs nothing); the weight also serves
    losses on logits (e.g. :func:`detkd.losses.kd.hinton_kd`) that would renormalise a zero row.

    Args:
        obj: Float[B, A, S_h, S_w]; cls: Float[B, A, S_h, S_w, K]; box: Float[B, A, S_h, S_w, 4]
            (see :class:`TeacherMap`).
        keep: Bool[B, A, S_h, S_w] from :func:`fm_nms`.
        mode: one of ``"class"``, ``"class_box"``, ``"all"``.
    """
    if mode not in _SUPPRESSES:
        raise ValueError(f"mode must be one of {tuple(_SUPPRESSES)}, got {mode!r}")
    if keep.shape != obj.shape or cls.shape[:-1] != obj.shape or box.shape[:-1] != obj.shape:
        raise ValueError("obj, cls[..., K], box[..., 4] and keep must share the grid shape [B, A, S_h, S_w]")
    what = _SUPPRESSES[mode]
    kept = keep.to(obj.dtype)
    ones = torch.ones_like(obj)
    return TeacherTargets(
        obj=obj * kept if what.obj else obj,
        cls=cls * kept.unsqueeze(-1),
        box=box,
        cls_weight=kept,
        box_weight=kept.clone() if what.box else ones,
    )


def fm_nms_targets(teacher: TeacherMap, kernel: int = 3, mode: FMNMSMode = "class") -> TeacherTargets:
    """:func:`fm_nms` then :func:`apply_fm_nms` on a :class:`TeacherMap` (empty slots: weight 0)."""
    keep = fm_nms(teacher.obj, teacher.cls, kernel)
    targets = apply_fm_nms(teacher.obj, teacher.cls, teacher.box, keep, mode)
    if teacher.valid is not None:
        weight = teacher.weight()
        targets.cls_weight = targets.cls_weight * weight
        targets.box_weight = targets.box_weight * weight
    return targets
