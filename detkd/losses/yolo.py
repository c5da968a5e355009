"""The YOLOv2 detection loss, under its name among the losses.

The code lives in :mod:`detkd.models.yolo_loss`: ``YoloDetector.loss`` needs it, and ``models`` sits
below ``losses`` in the layer order (docs/DESIGN.md), so the model cannot import from here. This
module re-exports its public names for the distillation losses and for callers that import the
loss from ``detkd.losses``.
"""

from __future__ import annotations

from detkd.models.yolo_loss import (
    YoloLossWeights,
    YoloTargets,
    box_term,
    build_targets,
    cls_term,
    obj_term,
    yolo_loss,
)

__all__ = [
    "YoloLossWeights",
    "YoloTargets",
    "box_term",
    "build_targets",
    "cls_term",
    "obj_term",
    "yolo_loss",
]
