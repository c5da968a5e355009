"""YOLOv2 box encoding, shared by ``decode``, the loss and distillation.

Raw head values per cell and anchor are ``(tx, ty, tw, th)``. For the anchor ``(aw, ah)`` (pixels)
of cell ``(cx, cy)`` (column, row) on a grid of ``stride`` pixels:

    center x = (sigmoid(tx) + cx) * stride        width  = aw * exp(tw)
    center y = (sigmoid(ty) + cy) * stride        height = ah * exp(th)

The *encoded* space, where targets live and the box loss is computed, is
``(sigmoid(tx), sigmoid(ty), tw, th)``: the center offset inside the cell in ``[0, 1]`` and the
log size ratio to the anchor. :func:`encode` maps xyxy boxes to it, :func:`decode` maps it back
(exact inverses), :func:`raw_to_encoded` maps raw head values to it, and :func:`decode_grid` turns a
whole raw output grid into xyxy boxes. Distillation projects teacher boxes into a student's space
with :func:`assign_cells` + :func:`best_anchors` + :func:`encode`.
"""

from __future__ import annotations

import math

import torch

from detkd.ops.boxes import cxcywh_to_xyxy, wh_iou, xyxy_to_cxcywh

__all__ = [
    "TW_CLAMP",
    "assign_cells",
    "best_anchors",
    "decode",
    "decode_grid",
    "encode",
    "grid_cells",
    "raw_to_encoded",
]

# exp(tw) is clamped before use so an untrained or diverging head cannot overflow; a box 62x the
# anchor is beyond anything a 13x13 grid predicts (torchvision's bbox_xform_clip uses the same value).
TW_CLAMP = math.log(1000.0 / 16)


def grid_cells(s_h: int, s_w: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Cell indices of a ``s_h x s_w`` grid: ``Float[s_h, s_w, 2]`` holding (column cx, row cy)."""
    ys = torch.arange(s_h, device=device, dtype=dtype)
    xs = torch.arange(s_w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)


def assign_cells(boxes: torch.Tensor, stride: int, grid_hw: tuple[int, int]) -> torch.Tensor:
    """The cell responsible for each box: the one holding its center.

    Args:
        boxes: Float[N, 4] xyxy input pixels.
        stride: pixels per cell.
        grid_hw: (S_h, S_w); centers on the far border are clamped into the last cell.

    Returns:
        Int64[N, 2] (column cx, row cy).
    """
    center = xyxy_to_cxcywh(boxes)[:, :2]
    cells = torch.floor(center / stride).long()
    cx = cells[:, 0].clamp(0, grid_hw[1] - 1)
    cy = cells[:, 1].clamp(0, grid_hw[0] - 1)
    return torch.stack((cx, cy), dim=-1)


def best_anchors(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Index of the anchor whose shape best fits each box (corner-aligned IoU of sizes).

    Args:
        boxes: Float[N, 4] xyxy pixels.
        anchors: Float[A, 2] (width, height) pixels.

    Returns:
        Int64[N]; ties go to the lowest anchor index.
    """
    wh = boxes[:, 2:] - boxes[:, :2]
    return wh_iou(wh, anchors.to(wh.dtype)).argmax(dim=1)


def encode(boxes: torch.Tensor, cells: torch.Tensor, anchor_wh: torch.Tensor, stride: int) -> torch.Tensor:
    """xyxy boxes -> encoded ``(sigmoid(tx), sigmoid(ty), tw, th)`` relative to a cell and anchor.

    Args:
        boxes: Float[..., 4] xyxy input pixels (positive width and height).
        cells: Float/Int[..., 2] (column, row) of the responsible cell.
        anchor_wh: Float[..., 2] anchor (width, height) pixels.
        stride: pixels per cell.

    Returns:
        Float[..., 4]: center offset in the cell (in [0, 1] when the center lies in the cell) and
        ``log(size / anchor)``.
    """
    cxcywh = xyxy_to_cxcywh(boxes)
    offset = cxcywh[..., :2] / stride - cells.to(boxes.dtype)
    log_wh = torch.log(cxcywh[..., 2:] / anchor_wh.to(boxes.dtype))
    return torch.cat((offset, log_wh), dim=-1)


def decode(encoded: torch.Tensor, cells: torch.Tensor, anchor_wh: torch.Tensor, stride: int) -> torch.Tensor:
    """Inverse of :func:`encode`: ``Float[..., 4]`` encoded -> ``Float[..., 4]`` xyxy input pixels.

    ``tw``/``th`` are clamped to :data:`TW_CLAMP` before ``exp``; all arguments broadcast.
    """
    center = (encoded[..., :2] + cells.to(encoded.dtype)) * stride
    size = anchor_wh.to(encoded.dtype) * torch.exp(encoded[..., 2:].clamp(max=TW_CLAMP))
    return cxcywh_to_xyxy(torch.cat((center, size), dim=-1))


def raw_to_encoded(raw: torch.Tensor) -> torch.Tensor:
    """Raw ``(tx, ty, tw, th)`` Float[..., 4] -> encoded ``(sigmoid(tx), sigmoid(ty), tw, th)``."""
    return torch.cat((torch.sigmoid(raw[..., :2]), raw[..., 2:4]), dim=-1)


def decode_grid(raw: torch.Tensor, anchors: torch.Tensor, stride: int) -> torch.Tensor:
    """A whole raw output grid to boxes.

    Args:
        raw: Float[B, A, S_h, S_w, C] head outputs with C >= 4 (only the first 4 are read).
        anchors: Float[A, 2] (width, height) pixels.
        stride: pixels per cell.

    Returns:
        Float[B, A, S_h, S_w, 4] xyxy input pixels (not clipped to the image).
    """
    s_h, s_w = raw.shape[2], raw.shape[3]
    cells = grid_cells(s_h, s_w, raw.device, raw.dtype)  # [S_h, S_w, 2] broadcasts over B, A
    anchor_wh = anchors.to(raw.dtype)[:, None, None, :]  # [A, 1, 1, 2]
    return decode(raw_to_encoded(raw[..., :4]), cells, anchor_wh, stride)
