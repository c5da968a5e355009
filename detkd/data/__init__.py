"""Datasets: VOC, COCO, YOLO-txt and image-folder readers, writers, checks, transforms, loaders.

Readers return a :class:`~detkd.data.records.DatasetIndex`; :class:`~detkd.data.dataset.DetectionDataset`
turns one into torch items ``(uint8 Tensor[3, H, W], target dict)``.
"""

from detkd.data.check import CheckReport, check_dataset
from detkd.data.collate import build_dataloader, collate_detection
from detkd.data.dataset import DatasetWarning, DetectionDataset
from detkd.data.records import DatasetError, DatasetIndex, Defect, DefectKind, ImageRecord
from detkd.data.sources import detect_format, read_index
from detkd.data.transforms import AugmentConfig, build_eval_transform, build_train_transform

__all__ = [
    "AugmentConfig",
    "CheckReport",
    "DatasetError",
    "DatasetIndex",
    "DatasetWarning",
    "Defect",
    "DefectKind",
    "DetectionDataset",
    "ImageRecord",
    "build_dataloader",
    "build_eval_transform",
    "build_train_transform",
    "check_dataset",
    "collate_detection",
    "detect_format",
    "read_index",
]
