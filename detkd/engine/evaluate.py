"""Evaluate a detector on a dataset split outside training (eval tool, benchmarks)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from detkd.data.collate import build_dataloader
from detkd.data.dataset import DetectionDataset
from detkd.data.records import DatasetIndex
from detkd.data.transforms import build_eval_transform
from detkd.data.writers import coco_dict
from detkd.engine.coco_metric import to_coco_results
from detkd.engine.metrics import evaluate_detections
from detkd.engine.model import DetDataPreprocessor, to_original_pixels
from detkd.errors import ConfigError
from detkd.models.detector import DecodeConfig

__all__ = ["check_classes", "evaluate_model", "predict_split"]


def check_classes(detector: nn.Module, index: DatasetIndex, source: str) -> None:
    """A model only evaluates (or is exported against) data with its own class list, in its order.

    Raises:
        ConfigError: (a ``ValueError``) the classes differ; the message names ``source``.
    """
    if list(detector.class_names) != list(index.class_names):
        raise ConfigError(f"{source}: model classes {list(detector.class_names)} differ from the data's {index.class_names}")


@torch.no_grad()
def predict_split(
    detector: nn.Module, index: DatasetIndex, batch_size: int = 8, num_workers: int = 0,
    decode_cfg: DecodeConfig | None = None, progress: bool = True,
) -> list[dict[str, Any]]:
    """COCO results entries (file pixels) for every image of ``index``, letterboxed to ``detector.imgsz``."""
    detector.eval()
    device = next(detector.parameters()).device
    loader = build_dataloader(DetectionDataset(index, build_eval_transform(int(detector.imgsz))), batch_size, num_workers=num_workers)
    prep = DetDataPreprocessor().to(device)
    assert index.category_ids is not None
    results: list[dict[str, Any]] = []
    for batch in tqdm(loader, desc="evaluating", disable=None if progress else True, leave=False):
        images, targets = prep(batch)
        dets = detector.decode(detector(images), decode_cfg or DecodeConfig())
        for det, target in zip(dets, targets, strict=True):
            results.extend(to_coco_results(to_original_pixels(det, target), index.category_ids))
    return results


def evaluate_model(detector: nn.Module, index: DatasetIndex, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(metrics, detections)``: COCO and VOC metrics of ``detector`` on ``index`` (see :func:`predict_split`)."""
    check_classes(detector, index, index.source)
    dets = predict_split(detector, index, **kwargs)
    return evaluate_detections(coco_dict(index, index.image_root), dets), dets
