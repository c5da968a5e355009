"""The YOLOv2 detection loss, split so distillation can reuse every piece.

Why it lives in ``models``: the detector protocol makes the training loss a method of the model
(``model.loss(outputs, targets)``), and ``models`` sits below ``losses`` in the layer order (see
docs/DESIGN.md), so :class:`~detkd.models.yolo.YoloDetector` cannot import from
:mod:`detkd.losses`. The YOLOv2 loss therefore sits next to its detector, as the SSD MultiBox loss
sits in :mod:`detkd.models.ssd`; it needs only the box coder and :mod:`detkd.ops.boxes`.
:mod:`detkd.losses` keeps the distillation losses, which build on these terms. (Injecting the loss into the model from
``losses`` instead would leave ``model.loss`` undefined until something imported ``losses``.)

Raw outputs are ``Float[B, A, S_h, S_w, 5 + K]`` = ``(tx, ty, tw, th, obj, class logits)`` (see
:mod:`detkd.models.heads`); boxes are encoded as in :mod:`detkd.models.box_coder`.

1. :func:`build_targets` turns ground truth into dense tensors on the output grid (:class:`YoloTargets`).
2. :func:`obj_term`, :func:`cls_term`, :func:`box_term` compute *un-reduced* per-(cell, anchor)
   losses; the distiller multiplies the teacher versions by the teacher's objectness before summing.
3. :func:`yolo_loss` masks and sums them: each term is ``weight * sum over elements / B``, so a
   term is a per-image total and does not shrink when a batch has few objects.

Choices (and why):
- Objectness: BCE-with-logits against a soft target (IoU for positives, 0 for no-object anchors),
  reported as the Bernoulli KL = BCE - H(target). Darknet used MSE on the sigmoid, whose gradient
  vanishes on confidently wrong logits (sigmoid' -> 0), which slows training from scratch. Subtracting
  the target entropy changes no gradient but makes a perfectly matched soft target (IoU or a
  teacher's objectness) log as 0.
- Classes: cross-entropy on softmax logits (KL for soft targets, same reasoning); YOLOv2's MSE on
  softmax has weak gradients far from the target. Soft targets let the teacher's distribution in.
- Box: squared error on ``(sigmoid(tx), sigmoid(ty), tw, th)`` against encoded targets, weighted
  per ground truth by ``2 - w*h / (H*W)`` so small boxes, whose errors cost more IoU, weigh more.
- No Darknet "prior" term (pulling every anchor to its default shape early on): with the head's
  small initial weights the predicted boxes already start at the anchors.
- Images whose target says ``labeled=False`` contribute no term at all (the distiller adds teacher
  terms for them); the normalisation still divides by the whole batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from detkd.models.box_coder import assign_cells, best_anchors, decode_grid, encode
from detkd.ops.boxes import box_area, box_iou_aligned

__all__ = [
    "YoloLossWeights",
    "YoloTargets",
    "box_term",
    "build_targets",
    "cls_term",
    "obj_term",
    "yolo_loss",
]


@dataclass
class YoloLossWeights:
    """Multipliers of the four terms (Darknet's yolov2-voc.cfg scales: object 5, noobject 1, class 1, coord 1).

    The no-object term sums over every anchor of every cell (845 per image at 416) while the object
    term only sees the few responsible anchors, hence the larger ``obj`` weight.
    """

    obj: float = 5.0
    noobj: float = 1.0
    cls: float = 1.0
    box: float = 1.0


@dataclass
class YoloTargets:
    """Dense targets on the output grid; every tensor is ``[B, A, S_h, S_w, ...]``.

    Attributes:
        pos: Bool — the responsible (cell holding the center, best anchor by shape IoU) of each
            non-difficult ground truth.
        tbox: Float[..., 4] encoded ``(sigmoid(tx), sigmoid(ty), tw, th)`` target (0 where not pos).
        tcls: Int64 class index (-1 where not pos).
        tobj: Float objectness target = IoU(predicted box, ground truth), detached (0 where not pos).
        noobj: Bool — anchors whose predicted box overlaps every ground truth (difficult included)
            by less than ``ignore_thr`` and that are not positive.
        box_weight: Float ``2 - w*h / (H*W)`` of the matched ground truth (0 where not pos).
        gt_index: Int64 index of the matched ground truth in the batch's concatenated targets (-1).
    """

    pos: torch.Tensor
    tbox: torch.Tensor
    tcls: torch.Tensor
    tobj: torch.Tensor
    noobj: torch.Tensor
    box_weight: torch.Tensor
    gt_index: torch.Tensor


@dataclass
class _BatchGT:
    """Ground truths of a batch, concatenated in image order."""

    image: torch.Tensor  # Int64[M] image index
    boxes: torch.Tensor  # Float[M, 4] xyxy pixels
    labels: torch.Tensor  # Int64[M]
    difficult: torch.Tensor  # Bool[M]
    labeled: torch.Tensor  # Bool[B]


def _gather(targets: list[dict[str, Any]], num_classes: int, device: torch.device, dtype: torch.dtype) -> _BatchGT:
    boxes, labels, difficult, image = [], [], [], []
    for i, t in enumerate(targets):
        b = torch.as_tensor(t["boxes"], dtype=dtype, device=device).reshape(-1, 4)
        boxes.append(b)
        labels.append(torch.as_tensor(t["labels"], dtype=torch.int64, device=device).reshape(-1))
        diff = t.get("difficult")
        diff = torch.zeros(len(b), dtype=torch.bool) if diff is None else torch.as_tensor(diff, dtype=torch.bool)
        difficult.append(diff.to(device).reshape(-1))
        image.append(torch.full((len(b),), i, dtype=torch.int64, device=device))
    labeled = torch.tensor([bool(t.get("labeled", True)) for t in targets], device=device)
    gt = _BatchGT(torch.cat(image), torch.cat(boxes), torch.cat(labels), torch.cat(difficult), labeled)
    if gt.labels.numel() and (gt.labels.min() < 0 or gt.labels.max() >= num_classes):
        raise ValueError(f"target labels must lie in 0..{num_classes - 1}, got {gt.labels.unique().tolist()}")
    return gt


def _max_iou(pred_boxes: torch.Tensor, gt: _BatchGT) -> torch.Tensor:
    """Best IoU of every predicted box with the ground truths of its image: ``[B, A, S_h, S_w]``."""
    b = pred_boxes.shape[0]
    flat = pred_boxes.reshape(b, -1, 4)
    counts = torch.bincount(gt.image, minlength=b)
    if gt.image.numel() == 0:
        return flat.new_zeros(pred_boxes.shape[:-1])
    # pad each image's boxes to the largest count so one broadcast IoU covers the whole batch
    slot = torch.arange(len(gt.image), device=flat.device) - (torch.cumsum(counts, 0) - counts)[gt.image]
    padded = flat.new_zeros(b, int(counts.max()), 4)
    valid = torch.zeros(b, padded.shape[1], dtype=torch.bool, device=flat.device)
    padded[gt.image, slot] = gt.boxes
    valid[gt.image, slot] = True
    iou = box_iou_aligned(flat[:, :, None, :], padded[:, None, :, :])  # [B, N, M]
    return iou.masked_fill(~valid[:, None, :], 0.0).amax(dim=2).reshape(pred_boxes.shape[:-1])


def _resolve_collisions(cell_id: torch.Tensor, area: torch.Tensor, num_cells: int) -> torch.Tensor:
    """Indices (into ``cell_id``) of the ground truth kept per (image, anchor, cell): the largest.

    Keeping the larger box is a choice: the smaller one is more likely to be found by a neighbouring
    cell or anchor at test time, while losing the large one would drop an easy object. Equal areas
    go to the later ground truth; either way the result is deterministic.
    """
    best_area = area.new_full((num_cells,), -1.0).scatter_reduce(0, cell_id, area, "amax")
    is_best = area >= best_area[cell_id]
    order = torch.arange(len(cell_id), device=cell_id.device)
    winner = torch.full((num_cells,), -1, dtype=torch.int64, device=cell_id.device)
    winner = winner.scatter_reduce(0, cell_id[is_best], order[is_best], "amax")
    return winner[winner >= 0]


@torch.no_grad()
def build_targets(
    outputs: torch.Tensor,
    targets: list[dict[str, Any]],
    anchors: torch.Tensor,
    stride: int,
    ignore_thr: float = 0.6,
) -> YoloTargets:
    """Match ground truths to the output grid (see :class:`YoloTargets`).

    Args:
        outputs: Float[B, A, S_h, S_w, 5 + K] raw head outputs (only read, detached).
        targets: per image ``boxes`` Float[N, 4] xyxy input pixels, ``labels`` Int64[N],
            optional ``difficult`` Bool[N] and ``labeled`` bool.
        anchors: Float[A, 2] (width, height) pixels.
        stride: pixels per cell; the input is ``S_h * stride`` x ``S_w * stride``.
        ignore_thr: predicted boxes overlapping a ground truth by at least this much get no
            no-object penalty (they are plausible detections of it).
    """
    bsz, num_a, s_h, s_w, channels = outputs.shape
    gt = _gather(targets, channels - 5, outputs.device, outputs.dtype)
    pred_boxes = decode_grid(outputs, anchors, stride)
    grid = (bsz, num_a, s_h, s_w)

    pos = torch.zeros(grid, dtype=torch.bool, device=outputs.device)
    tbox = outputs.new_zeros(*grid, 4)
    tcls = torch.full(grid, -1, dtype=torch.int64, device=outputs.device)
    tobj = outputs.new_zeros(grid)
    box_weight = outputs.new_zeros(grid)
    gt_index = torch.full(grid, -1, dtype=torch.int64, device=outputs.device)

    wh = gt.boxes[:, 2:] - gt.boxes[:, :2]
    usable = ~gt.difficult & gt.labeled[gt.image] & (wh > 0).all(dim=1)
    idx = torch.nonzero(usable).flatten()
    if idx.numel():
        boxes = gt.boxes[idx]
        cells = assign_cells(boxes, stride, (s_h, s_w))
        anchor = best_anchors(boxes, anchors)
        cell_id = ((gt.image[idx] * num_a + anchor) * s_h + cells[:, 1]) * s_w + cells[:, 0]
        keep = _resolve_collisions(cell_id, box_area(boxes), bsz * num_a * s_h * s_w)
        idx, boxes, cells, anchor, cell_id = idx[keep], boxes[keep], cells[keep], anchor[keep], cell_id[keep]

        pos.view(-1)[cell_id] = True
        tbox.view(-1, 4)[cell_id] = encode(boxes, cells, anchors.to(boxes.dtype)[anchor], stride)
        tcls.view(-1)[cell_id] = gt.labels[idx]
        tobj.view(-1)[cell_id] = box_iou_aligned(pred_boxes.reshape(-1, 4)[cell_id], boxes)
        box_weight.view(-1)[cell_id] = 2.0 - box_area(boxes) / float(s_h * s_w * stride * stride)
        gt_index.view(-1)[cell_id] = idx

    noobj = (_max_iou(pred_boxes, gt) < ignore_thr) & ~pos & gt.labeled[:, None, None, None]
    return YoloTargets(pos, tbox, tcls, tobj, noobj, box_weight, gt_index)


def obj_term(pred_logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Objectness loss per element: Bernoulli KL(target || sigmoid(pred_logit)) = BCE - H(target).

    Args:
        pred_logit: Float[...] raw objectness logits.
        target: Float[...] probabilities in [0, 1] (IoU, 0, or a teacher's objectness).

    Returns:
        Float[...], un-reduced, >= 0, zero when sigmoid(pred_logit) == target.
    """
    target = target.to(pred_logit.dtype)
    bce = F.binary_cross_entropy_with_logits(pred_logit, target, reduction="none")
    neg_entropy = torch.special.xlogy(target, target) + torch.special.xlogy(1 - target, 1 - target)
    return bce + neg_entropy


def cls_term(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class loss per element: cross-entropy of softmax(pred_logits) (KL for soft targets).

    Args:
        pred_logits: Float[..., K] raw class logits.
        target: Int64[...] class indices, or Float[..., K] probabilities (a teacher's distribution;
            rows need not sum to 1, e.g. after FM-NMS zeroed them).

    Returns:
        Float[...], un-reduced (summed over classes only).
    """
    log_p = F.log_softmax(pred_logits, dim=-1)
    if not target.is_floating_point():
        return -log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    target = target.to(log_p.dtype)
    return (torch.special.xlogy(target, target) - target * log_p).sum(dim=-1)


def box_term(pred_t: torch.Tensor, target_t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Box loss per element: squared error in the encoded space.

    Args:
        pred_t: Float[..., 4] *raw* ``(tx, ty, tw, th)``; the sigmoid of tx, ty is applied here.
        target_t: Float[..., 4] encoded targets ``(sigmoid(tx), sigmoid(ty), tw, th)``.
        weight: optional Float[...] per-element multiplier (the small-box weight).

    Returns:
        Float[...], un-reduced (summed over the 4 coordinates only).
    """
    pred_enc = torch.cat((torch.sigmoid(pred_t[..., :2]), pred_t[..., 2:4]), dim=-1)
    err = (pred_enc - target_t.to(pred_enc.dtype)).pow(2).sum(dim=-1)
    return err if weight is None else err * weight


def yolo_loss(
    outputs: torch.Tensor,
    targets: list[dict[str, Any]],
    anchors: torch.Tensor,
    stride: int,
    weights: YoloLossWeights | None = None,
    ignore_thr: float = 0.6,
) -> dict[str, torch.Tensor]:
    """The YOLOv2 loss: ``loss_obj``, ``loss_noobj``, ``loss_cls``, ``loss_box`` scalars.

    Each is ``weight * (sum of its per-element term over its mask) / B`` with B the batch size;
    their sum is what training minimises. Arguments as in :func:`build_targets`.
    """
    w = weights or YoloLossWeights()
    t = build_targets(outputs, targets, anchors, stride, ignore_thr)
    bsz = outputs.shape[0]
    noobj_logit = outputs[..., 4][t.noobj]
    pos = outputs[t.pos]  # [P, 5 + K]
    return {
        "loss_obj": w.obj * obj_term(pos[:, 4], t.tobj[t.pos]).sum() / bsz,
        "loss_noobj": w.noobj * obj_term(noobj_logit, torch.zeros_like(noobj_logit)).sum() / bsz,
        "loss_cls": w.cls * cls_term(pos[:, 5:], t.tcls[t.pos]).sum() / bsz,
        "loss_box": w.box * box_term(pos[:, :4], t.tbox[t.pos], t.box_weight[t.pos]).sum() / bsz,
    }
