"""Labeled and unlabeled images in one training set, at a fixed ratio per epoch.

Distillation trains on extra images that carry no labels (Bucila et al. 2006; Mehta & Ozturk
2018): the teacher's outputs are their only targets. :class:`MixedDataset` serves, per epoch, every
labeled image once plus ``round(ratio * len(labeled))`` unlabeled images drawn from the unlabeled
pool: without repetition while the pool lasts (then it wraps around), reshuffled every epoch from
``(seed, epoch)`` so a resumed run draws the same images. Unlabeled items have ``labeled=False``
and no boxes; the loss gives them teacher terms only.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from detkd.data.dataset import DetectionDataset
from detkd.data.records import DatasetIndex, ImageRecord

__all__ = ["MixedDataset", "as_unlabeled", "shared_images"]


def as_unlabeled(index: DatasetIndex) -> DatasetIndex:
    """The same images without their annotations (``labeled=False``, no boxes): a labeled split
    used as extra unlabeled data (its labels are never read by training)."""
    records: list[ImageRecord] = [
        replace(r, boxes=np.zeros((0, 4), np.float32), labels=np.zeros((0,), np.int64),
                difficult=np.zeros((0,), bool), ann_file=None, labeled=False)
        for r in index.records
    ]
    return replace(index, records=records, num_annotated_boxes=0)


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def shared_images(pool: DatasetIndex, split: DatasetIndex) -> list[Path]:
    """The images of ``pool`` that are also images of ``split``: the same file (resolved path) or a copy of it
    (same size and bytes; only files whose sizes collide are read). Returns ``pool``'s paths, in its order."""
    resolved = {r.path.resolve() for r in split.records}
    by_size: dict[int, list[Path]] = defaultdict(list)
    for record in split.records:
        if record.path.is_file():
            by_size[record.path.stat().st_size].append(record.path)
    digests: dict[int, set[str]] = {}
    shared = []
    for record in pool.records:
        path = record.path
        if path.resolve() in resolved:
            shared.append(path)
            continue
        size = path.stat().st_size if path.is_file() else -1
        if size in by_size:
            if size not in digests:
                digests[size] = {_digest(p) for p in by_size[size]}
            if _digest(path) in digests[size]:
                shared.append(path)
    return shared


class MixedDataset(Dataset[Any]):
    """``len(labeled) + round(ratio * len(labeled))`` items per epoch (see the module docstring).

    Args:
        labeled: the training split.
        unlabeled: the unlabeled pool (same transform as ``labeled``; its own seed).
        ratio: unlabeled images per labeled image in an epoch (0 = labeled only).
        seed: base seed of the per-epoch draw.
    """

    def __init__(self, labeled: DetectionDataset, unlabeled: DetectionDataset, ratio: float, seed: int = 0) -> None:
        if ratio < 0:
            raise ValueError(f"unlabeled ratio must be >= 0, got {ratio}")
        if len(unlabeled) == 0 and ratio > 0:
            raise ValueError("the unlabeled pool is empty")
        self.labeled, self.unlabeled = labeled, unlabeled
        self.ratio, self.seed = float(ratio), int(seed)
        self.num_unlabeled = int(round(self.ratio * len(labeled)))
        self._draw: np.ndarray = np.zeros(0, dtype=np.int64)
        self.set_epoch(0)

    @property
    def class_names(self) -> list[str]:
        return self.labeled.class_names

    @property
    def metainfo(self) -> dict[str, Any]:
        return self.labeled.metainfo

    def __len__(self) -> int:
        return len(self.labeled) + self.num_unlabeled

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Seed both datasets' augmentation and draw this epoch's unlabeled images."""
        self.labeled.set_epoch(epoch, rank)
        self.unlabeled.set_epoch(epoch, rank)
        pool = len(self.unlabeled)
        if self.num_unlabeled == 0:
            self._draw = np.zeros(0, dtype=np.int64)
            return
        rng = np.random.default_rng([self.seed, epoch])
        rounds = -(-self.num_unlabeled // pool)
        self._draw = np.concatenate([rng.permutation(pool) for _ in range(rounds)])[: self.num_unlabeled]

    def __getitem__(self, i: int) -> Any:
        if i < 0:
            i += len(self)
        if i < len(self.labeled):
            return self.labeled[i]
        return self.unlabeled[int(self._draw[i - len(self.labeled)])]
