"""The mmengine metric for detkd: COCO AP (pycocotools) and VOC AP on the validation split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmengine.evaluator import BaseMetric

from detkd.engine.metrics import evaluate_detections
from detkd.fileio import atomic_write_json

__all__ = ["CocoDetMetric", "to_coco_results"]

SCALAR_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "voc07_AP50", "voc_AP50")


def to_coco_results(pred: dict[str, Any], category_ids: list[int]) -> list[dict[str, Any]]:
    """One image's predictions (xyxy file pixels, labels 0..K-1) as COCO results entries."""
    entries = []
    for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True):
        x1, y1, x2, y2 = box
        entries.append({
            "image_id": pred["image_id"],
            "category_id": category_ids[int(label)],
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(score), 5),
        })
    return entries


class CocoDetMetric(BaseMetric):
    """Evaluates predictions of :class:`~detkd.engine.model.DetectorModel` against COCO ground truth.

    Args:
        gt: COCO instances dict of the evaluated split (e.g. ``coco_dict(index, ...)``).
        category_ids: COCO category id of each label.
        out_dir: when given, the last evaluation's detections and full metrics (per class
            included) are written there as ``dets.json`` and ``metrics.json``.
    """

    default_prefix = "coco"

    def __init__(self, gt: dict[str, Any], category_ids: list[int], out_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gt = gt
        self.category_ids = list(category_ids)
        self.out_dir = out_dir
        self.last_metrics: dict[str, Any] = {}

    def process(self, data_batch: Any, data_samples: Sequence[dict[str, Any]]) -> None:
        for pred in data_samples:
            self.results.append(to_coco_results(pred, self.category_ids))

    def compute_metrics(self, results: list[list[dict[str, Any]]]) -> dict[str, float]:
        dets = [entry for image in results for entry in image]
        metrics = evaluate_detections(self.gt, dets)
        self.last_metrics = metrics
        if self.out_dir:
            atomic_write_json(Path(self.out_dir) / "dets.json", dets, indent=None)
            atomic_write_json(Path(self.out_dir) / "metrics.json", metrics)
        return {key: float(metrics[key]) for key in SCALAR_KEYS if key in metrics}
