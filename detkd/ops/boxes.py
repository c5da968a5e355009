"""Box geometry shared by decoding, losses, anchors and distillation.

Box convention: ``xyxy`` in input pixels (continuous coordinates, width = ``x2 - x1``), the same as
:mod:`detkd.data.records`. ``wh`` tensors are ``[..., 2]`` (width, height) in pixels.
Pairwise IoU of two box *sets* is :func:`torchvision.ops.box_iou`; the functions here cover the
cases it does not: element-wise IoU of broadcast tensors and IoU of sizes aligned at a corner.
"""

from __future__ import annotations

import torch

__all__ = ["box_area", "box_iou_aligned", "cxcywh_to_xyxy", "wh_iou", "xyxy_to_cxcywh"]

_EPS = 1e-9  # keeps IoU finite for degenerate (zero-area) boxes


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``Float[..., 4]`` xyxy -> ``Float[..., 4]`` (center x, center y, width, height)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``Float[..., 4]`` (center x, center y, width, height) -> ``Float[..., 4]`` xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``Float[..., 4]`` xyxy -> ``Float[...]`` area (negative sizes count as zero)."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou_aligned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of broadcastable ``a`` Float[..., 4] and ``b`` Float[..., 4] (xyxy).

    Broadcasting gives pairwise IoU too: ``box_iou_aligned(p[:, None], g[None])`` is ``[N, M]``.
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (box_area(a) + box_area(b) - inter + _EPS)


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of box sizes placed at a common corner: ``wh1`` Float[N, 2], ``wh2`` Float[M, 2] -> Float[N, M].

    This is the IoU YOLOv2 uses to match a ground truth to an anchor (shape only, position ignored).
    """
    inter = torch.minimum(wh1[:, None, :], wh2[None, :, :]).clamp(min=0).prod(-1)
    area1 = wh1.clamp(min=0).prod(-1)[:, None]
    area2 = wh2.clamp(min=0).prod(-1)[None, :]
    return inter / (area1 + area2 - inter + _EPS)
