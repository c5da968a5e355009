"""Datasets: VOC, COCO, YOLO-txt and image-folder readers, writers, checks, transforms, loaders.

Readers return a :class:`~detkd.data.records.DatasetIndex`; :class:`~detkd.data.dataset.DetectionDataset`
turns one into torch items ``(uint8 Tensor[3, H, W], target dict)``.

Names are imported on first use: the readers and tools that only parse annotations should not
pay for importing torch and albumentations (seconds per process, and per worker on spawn).
"""

from __future__ import annotations

from detkd._lazy import lazy_exports

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
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
