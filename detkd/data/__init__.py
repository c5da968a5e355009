"""Datasets: VOC, COCO, YOLO-txt and image-folder readers, writers, checks, transforms, loaders.

Readers return a :class:`~detkd.data.records.DatasetIndex`; :class:`~detkd.data.dataset.DetectionDataset`
turns one into torch items ``(uint8 Tensor[3, H, W], target dict)``.

Names are imported on first use: the readers and tools that only parse annotations should not
pay for importing torch and albumentations (seconds per process, and per worker on spawn).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AugmentConfig": "transforms",
    "build_eval_transform": "transforms",
    "build_train_transform": "transforms",
    "CheckReport": "check",
    "check_dataset": "check",
    "build_dataloader": "collate",
    "collate_detection": "collate",
    "DatasetWarning": "dataset",
    "DetectionDataset": "dataset",
    "DatasetError": "records",
    "DatasetIndex": "records",
    "Defect": "records",
    "DefectKind": "records",
    "ImageRecord": "records",
    "detect_format": "sources",
    "read_index": "sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
