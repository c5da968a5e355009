"""Teacher adapters: any teacher's predictions in the student's output space.

The student is a YOLOv2-family detector: one grid of ``S_h x S_w`` cells at ``stride`` pixels,
``A`` anchors per cell, ``K`` classes (:class:`StudentSpace`). A teacher adapter runs the frozen
teacher on the student's (letterboxed) input batch and returns a
:class:`~detkd.ops.fm_nms.TeacherMap` on that grid: per slot (anchor, row, column) an objectness
probability, a class distribution and an encoded box, which FM-NMS and the distillation loss use.

Two routes:

- **Direct** (:class:`YoloTeacher` when the teacher has the student's stride, grid, anchors and
  classes): the teacher's raw outputs already are in the student's space: ``sigmoid(obj)``,
  ``softmax(class logits)`` (the logits are kept for Hinton KD), ``(sigmoid(tx), sigmoid(ty), tw, th)``.
- **Projection** (every other teacher, through one generic :class:`TeacherAdapter`): the teacher's
  own ``candidates(outputs)`` (:class:`~detkd.models.detector.Candidates`: one per anchor, default
  box or anchor point, before any threshold or NMS; xyxy boxes, objectness, class distribution —
  each detector family says in ``detkd/models/`` what those are, so a new family touches nothing
  here) are scaled to student pixels, their classes mapped, and placed by :func:`project_candidates`:
  each candidate goes to the cell holding its centre and the student anchor whose shape fits it best
  (the same rule that assigns ground truth in :func:`detkd.models.yolo_loss.build_targets`), its box
  is encoded against that cell and anchor (:func:`detkd.models.box_coder.encode`), and when several
  candidates land in one slot the one with the highest objectness wins (ties: lowest candidate
  index). Slots no candidate reaches get objectness 0 (the teacher says "nothing here") and
  ``valid=False``, so they carry no class or box target.

Objectness of heads without one (from their ``candidates()``): an ultralytics YOLO (anchor-free,
per-class sigmoid scores) uses its best class score and ``scores / sum(scores)`` as the class
distribution; an SSD (softmax with a background column) uses ``1 - p(background)`` and the
foreground probabilities renormalised. With a class map, the objectness is multiplied by the class
mass the student keeps (for ultralytics teachers this replaced "best score among the kept classes").

Input size: a teacher built for another square size than the student gets the student's batch
resized to its size (the letterbox pads at the bottom/right, so this is a uniform scale) and its
boxes scaled back; this happens only when the config says ``teacher.imgsz`` (otherwise a size
mismatch is an error). Class order: teacher and student must have the same class names in the same
order, unless the config gives ``teacher.class_map`` (``{teacher_name: student_name}``, or
``"by_name"`` to match equal names); teacher classes mapped to no student class are dropped and
their probability is removed from the objectness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from detkd.errors import TeacherError
from detkd.models.box_coder import assign_cells, best_anchors, encode, raw_to_encoded
from detkd.models.detector import Candidates
from detkd.ops.fm_nms import TeacherMap

__all__ = [
    "Candidates",
    "StudentSpace",
    "TeacherAdapter",
    "TeacherError",
    "YoloTeacher",
    "build_teacher_adapter",
    "class_mapping",
    "project_candidates",
]

_EPS = 1e-6


@dataclass(frozen=True)
class StudentSpace:
    """The student's output grid.

    Attributes:
        anchors: Float[A, 2] (width, height) pixels at ``imgsz``.
        stride: pixels per cell.
        imgsz: square input size (``S = imgsz / stride`` cells per side).
        class_names: the K student classes.
    """

    anchors: torch.Tensor
    stride: int
    imgsz: int
    class_names: tuple[str, ...]

    @property
    def grid_hw(self) -> tuple[int, int]:
        side = self.imgsz // self.stride
        return side, side

    @classmethod
    def of(cls, student: nn.Module) -> StudentSpace:
        """The space of a :class:`~detkd.models.yolo.YoloDetector` (anything with ``anchors``,
        ``stride``, ``imgsz``, ``class_names``)."""
        for attr in ("anchors", "stride", "imgsz", "class_names"):
            if not hasattr(student, attr):
                raise TeacherError(f"the student must be a YOLOv2-family detector (no {attr!r} on {type(student).__name__})")
        return cls(student.anchors.detach().cpu().clone(), int(student.stride), int(student.imgsz), tuple(student.class_names))


def class_mapping(teacher_names: Sequence[str], student_names: Sequence[str],
                  class_map: Mapping[str, str | None] | str | None) -> torch.Tensor | None:
    """Int64[K_teacher]: the student class of each teacher class (-1 = dropped), or None when the
    names are identical and no mapping is needed.

    Raises:
        TeacherError: different names without a ``class_map``, or a map naming unknown classes.
    """
    teacher_names, student_names = list(teacher_names), list(student_names)
    if class_map is None:
        if teacher_names == student_names:
            return None
        raise TeacherError(
            f"teacher classes {teacher_names} differ from the student's {student_names}; set teacher.class_map "
            "({teacher_name: student_name, ...} or 'by_name') in the config to map them"
        )
    if class_map == "by_name":
        pairs: Mapping[str, str | None] = {n: n for n in teacher_names if n in student_names}
    elif isinstance(class_map, Mapping):
        pairs = class_map
    else:
        raise TeacherError(f"teacher.class_map must be a dict or 'by_name', got {class_map!r}")
    unknown_t = [t for t in pairs if t not in teacher_names]
    unknown_s = [s for s in pairs.values() if s is not None and s not in student_names]
    if unknown_t or unknown_s:
        raise TeacherError(f"teacher.class_map names unknown classes: teacher {unknown_t}, student {unknown_s}")
    if not any(v is not None for v in pairs.values()):
        raise TeacherError("teacher.class_map maps no teacher class to a student class")
    index = [student_names.index(pairs[t]) if pairs.get(t) is not None else -1 for t in teacher_names]  # type: ignore[arg-type]
    mapping = torch.tensor(index, dtype=torch.int64)
    if torch.equal(mapping, torch.arange(len(student_names))) and len(teacher_names) == len(student_names):
        return None
    return mapping


def map_classes(probs: torch.Tensor, mapping: torch.Tensor | None, num_student: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher class probabilities Float[..., K_t] -> (student distribution Float[..., K_s], mass Float[...]).

    ``mass`` is the probability the teacher gives to classes the student knows (1 without a mapping);
    the distribution is renormalised over those classes (all 0 where the mass is 0).
    """
    if mapping is None:
        return probs, torch.ones_like(probs[..., 0])
    mapping = mapping.to(probs.device)
    out = probs.new_zeros((*probs.shape[:-1], num_student))
    kept = mapping >= 0
    out.index_add_(out.dim() - 1, mapping[kept], probs[..., kept])
    mass = out.sum(dim=-1)
    return out / mass.clamp(min=_EPS).unsqueeze(-1), mass


def project_candidates(cands: Candidates, space: StudentSpace) -> TeacherMap:
    """Place candidates on the student's grid (rule in the module docstring); vectorised.

    Returns:
        A :class:`TeacherMap` Float[B, A, S_h, S_w, ...] with ``valid`` marking filled slots and
        ``cls_logits = log(cls)`` (clamped) for logit terms.
    """
    boxes, obj, cls = cands.boxes, cands.obj, cands.cls
    bsz, num, num_k = cls.shape
    s_h, s_w = space.grid_hw
    limit = float(space.imgsz)
    boxes = boxes.clamp(0, limit)
    anchors = space.anchors.to(boxes.device, boxes.dtype)
    num_a = anchors.shape[0]
    flat_boxes = boxes.reshape(-1, 4)
    wh = flat_boxes[:, 2:] - flat_boxes[:, :2]
    usable = (wh > _EPS).all(dim=1) & torch.isfinite(obj.reshape(-1))
    cells = assign_cells(flat_boxes, space.stride, (s_h, s_w))  # [B*N, 2] (cx, cy)
    anchor = best_anchors(flat_boxes.clamp(min=0), anchors)
    image = torch.arange(bsz, device=boxes.device).repeat_interleave(num)
    slot = ((image * num_a + anchor) * s_h + cells[:, 1]) * s_w + cells[:, 0]
    # unique ranking key: objectness, ties broken by the lower candidate index
    score = torch.where(usable, obj.reshape(-1), torch.full_like(obj.reshape(-1), -1.0))
    order = torch.sort(score, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    key = (-rank.to(torch.float64)).masked_fill(~usable, -float("inf"))
    total = bsz * num_a * s_h * s_w
    best = torch.full((total,), -float("inf"), dtype=torch.float64, device=boxes.device)
    best.scatter_reduce_(0, slot, key, reduce="amax")
    winner = usable & (key == best[slot])
    win_slot = slot[winner]
    out_obj = obj.new_zeros(total)
    out_cls = cls.new_zeros(total, num_k)
    out_box = boxes.new_zeros(total, 4)
    valid = torch.zeros(total, dtype=torch.bool, device=boxes.device)
    out_obj[win_slot] = obj.reshape(-1)[winner]
    out_cls[win_slot] = cls.reshape(-1, num_k)[winner]
    out_box[win_slot] = encode(flat_boxes[winner], cells[winner], anchors[anchor[winner]], space.stride)
    valid[win_slot] = True
    shape = (bsz, num_a, s_h, s_w)
    out_cls = out_cls.reshape(*shape, num_k)
    return TeacherMap(
        obj=out_obj.reshape(shape),
        cls=out_cls,
        box=out_box.reshape(*shape, 4),
        valid=valid.reshape(shape),
        cls_logits=torch.log(out_cls.clamp(min=_EPS)),
    )


class TeacherAdapter(nn.Module):
    """A frozen teacher whose ``forward(student_images) -> TeacherMap`` speaks the student's space.

    The teacher is put in eval mode, its parameters stop requiring gradients, and ``forward`` runs
    under ``torch.no_grad``; ``train(True)`` on the adapter keeps the teacher in eval mode.

    Args:
        teacher: the wrapped detector (``class_names``, ``imgsz`` attributes).
        space: the student's output space.
        imgsz: the teacher's input size when it differs from the student's (the config's mapping).
        class_map: see :func:`class_mapping`.
    """

    def __init__(self, teacher: nn.Module, space: StudentSpace, imgsz: int | None = None,
                 class_map: Mapping[str, str | None] | str | None = None) -> None:
        super().__init__()
        self.teacher = teacher
        self.space = space
        own = int(getattr(teacher, "imgsz", space.imgsz))
        if imgsz is None and own != space.imgsz:
            raise TeacherError(f"the teacher is built for {own} px input and the student for {space.imgsz} px; "
                               f"set teacher.imgsz={own} in the config to resize the student's batch for the teacher")
        if imgsz is not None and int(imgsz) != own:
            raise TeacherError(f"teacher.imgsz={imgsz} but the teacher is built for {own} px input")
        self.imgsz = own
        self.mapping = class_mapping(list(teacher.class_names), list(space.class_names), class_map)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> TeacherAdapter:
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def scale(self) -> float:
        """Student pixels per teacher pixel."""
        return self.space.imgsz / self.imgsz

    def teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, 3, S, S] student batch -> Float[B, 3, T, T] at the teacher's size."""
        if self.imgsz == images.shape[-1] and self.imgsz == images.shape[-2]:
            return images
        return F.interpolate(images, size=(self.imgsz, self.imgsz), mode="bilinear", align_corners=False)

    def candidates(self, outputs: Any) -> Candidates:
        """The teacher's own :meth:`candidates` (every slot, before thresholds and NMS) in the
        student's pixels and classes: boxes scaled, classes mapped, objectness times the
        probability mass of the classes the student knows."""
        own = self.teacher.candidates(outputs)
        return self._to_student(own.boxes, own.cls, own.obj)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> TeacherMap:
        """Float[B, 3, S, S] in [0, 1] (the student's batch) -> :class:`TeacherMap` on the student's grid."""
        self.teacher.eval()
        outputs = self.teacher(self.teacher_input(images))
        return project_candidates(self.candidates(outputs), self.space)

    def from_cache(self, targets: Sequence[Mapping[str, Any]]) -> TeacherMap:
        """The :class:`TeacherMap` of a batch from its cached candidates (``teacher_boxes`` Float[M, 4] in
        student input pixels, already moved by the sample's augmentation; ``teacher_obj`` Float[M];
        ``teacher_cls`` Float[M, K_teacher]), projected exactly like online candidates."""
        num_k = len(self.teacher.class_names)
        rows = max([int(t["teacher_obj"].numel()) for t in targets if "teacher_obj" in t] + [1])
        device = next((t["teacher_obj"].device for t in targets if "teacher_obj" in t), torch.device("cpu"))
        boxes = torch.zeros(len(targets), rows, 4, device=device)  # padding: zero-size boxes, never placed
        obj = torch.zeros(len(targets), rows, device=device)
        probs = torch.zeros(len(targets), rows, num_k, device=device)
        for i, t in enumerate(targets):
            if "teacher_obj" in t:
                n = int(t["teacher_obj"].numel())
                boxes[i, :n], obj[i, :n], probs[i, :n] = t["teacher_boxes"], t["teacher_obj"], t["teacher_cls"]
        cls, mass = map_classes(probs, self.mapping, len(self.space.class_names))
        return project_candidates(Candidates(boxes, obj * mass, cls), self.space)

    def _to_student(self, boxes: torch.Tensor, probs: torch.Tensor, obj: torch.Tensor) -> Candidates:
        cls, mass = map_classes(probs, self.mapping, len(self.space.class_names))
        return Candidates(boxes * self.scale, obj * mass, cls)


class YoloTeacher(TeacherAdapter):
    """A detkd YOLOv2-family teacher; direct when its head matches the student's, projected otherwise."""

    def __init__(self, teacher: nn.Module, space: StudentSpace, imgsz: int | None = None,
                 class_map: Mapping[str, str | None] | str | None = None, direct: bool = True) -> None:
        super().__init__(teacher, space, imgsz, class_map)
        same_anchors = teacher.anchors.shape == space.anchors.shape and torch.allclose(
            teacher.anchors.detach().cpu(), space.anchors, atol=1e-3)
        self.direct = bool(direct and same_anchors and int(teacher.stride) == space.stride and self.imgsz == space.imgsz
                           and self.mapping is None)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> TeacherMap:
        if not self.direct:
            return super().forward(images)
        self.teacher.eval()
        raw = self.teacher(images)
        return TeacherMap(
            obj=torch.sigmoid(raw[..., 4]),
            cls=torch.softmax(raw[..., 5:], dim=-1),
            box=raw_to_encoded(raw[..., :4]),
            cls_logits=raw[..., 5:],
        )


def build_teacher_adapter(teacher: nn.Module, student: nn.Module, imgsz: int | None = None,
                          class_map: Mapping[str, str | None] | str | None = None, direct: bool = True) -> TeacherAdapter:
    """The adapter for ``teacher``: any detector with ``candidates()`` (see
    :class:`~detkd.models.detector.Detector`) is projected onto the student's grid; a YOLOv2-family
    teacher with the student's very output space maps directly (:class:`YoloTeacher`) unless ``direct``
    is False (then it is projected like any other: the cached teacher's route, for comparisons)."""
    from detkd.models.yolo import YoloDetector

    space = StudentSpace.of(student)
    if isinstance(teacher, YoloDetector):
        return YoloTeacher(teacher, space, imgsz, class_map, direct)
    if not callable(getattr(teacher, "candidates", None)):
        raise TeacherError(f"{type(teacher).__name__} has no candidates(): a teacher must follow detkd's Detector protocol")
    return TeacherAdapter(teacher, space, imgsz, class_map)
