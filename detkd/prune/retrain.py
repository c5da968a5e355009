"""Retraining a pruned SSD with its unpruned self as the teacher (``prune.retrain.distill``).

:class:`SSDDistillModel` adds :func:`detkd.losses.ssd_distill.ssd_output_distill` (KD on every default
box's classes, box regression weighted by the teacher's foreground probability) to the pruned
model's own MultiBox loss. The teacher is frozen, runs in eval mode without gradients, and is not a
submodule: it is neither optimised nor saved in the checkpoints (which hold only the student).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from detkd.engine.model import DetectorModel
from detkd.losses.ssd_distill import ssd_output_distill
from detkd.models.detector import DecodeConfig
from detkd.options import RetrainOptions

__all__ = ["SSDDistillModel"]


class SSDDistillModel(DetectorModel):
    """A pruned SSD (``detector``) trained with its loss plus output distillation from ``teacher``.

    Args:
        detector: the pruned SSD (the student).
        teacher: the unpruned SSD it came from (same default boxes and classes).
        opts: temperature and term weights (:class:`~detkd.options.RetrainOptions`).
    """

    def __init__(self, detector: nn.Module, teacher: nn.Module, opts: RetrainOptions | None = None,
                 decode_cfg: DecodeConfig | None = None) -> None:
        super().__init__(detector, decode_cfg)
        self.opts = opts or RetrainOptions(distill=True)
        teacher.eval().requires_grad_(False)
        object.__setattr__(self, "teacher", teacher)  # not a submodule: not trained, not in checkpoints

    def forward(self, images: torch.Tensor, targets: list[dict[str, Any]] | None = None, mode: str = "tensor") -> Any:  # type: ignore[override]
        if mode != "loss":
            return super().forward(images, targets, mode)
        if targets is None:
            raise ValueError("mode='loss' needs targets")
        outputs = self.detector(images)
        losses = dict(self.detector.loss(outputs, targets))
        teacher: nn.Module = self.teacher  # type: ignore[assignment]
        if next(teacher.parameters()).device != images.device:
            teacher.to(images.device)
        with torch.no_grad():
            teacher_outputs = teacher(images)
        losses.update(ssd_output_distill(outputs, teacher_outputs, self.opts.tau, self.opts.cls_weight, self.opts.box_weight))
        return losses
