"""Typed options: each config section read once into a dataclass, with one default per setting.

:func:`parse_section` turns a config mapping into an options dataclass: unknown keys are refused
with the closest known key suggested, every value is checked against the field's type (and its
``choices`` / ``min`` / ``max`` metadata), nested dataclasses are parsed recursively. Each error
is a one-line :class:`~detkd.errors.ConfigError` naming the key, the value and what is allowed.

This module is the lowest layer with :mod:`detkd.errors`: every other layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DecodeConfig"]


@dataclass
class DecodeConfig:
    """Post-processing thresholds shared by all detectors (config section ``decode``).

    Attributes:
        score_thr: drop candidates below this score (0.001 for mAP evaluation, higher to deploy).
        nms_iou: IoU threshold of the per-class NMS.
        max_det: detections kept per image after NMS.
        pre_nms_topk: candidates per image considered by NMS.
    """

    score_thr: float = 0.001
    nms_iou: float = 0.5
    max_det: int = 100
    pre_nms_topk: int = 1000

    def to_dict(self) -> dict[str, float | int]:
        return {"score_thr": self.score_thr, "nms_iou": self.nms_iou, "max_det": self.max_det, "pre_nms_topk": self.pre_nms_topk}
