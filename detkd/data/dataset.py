"""The torch ``Dataset`` over a :class:`DatasetIndex`, with the item convention of DESIGN.md.

Item: ``(image uint8 Tensor[3, H, W], target)`` where target holds ``boxes`` Float32[N, 4] xyxy
absolute pixels of the returned image, ``labels`` Int64[N] in ``0..K-1``, ``difficult`` Bool[N],
``image_id`` int, ``orig_size`` (h, w) of the file, ``scale`` (sx, sy) from file to returned
pixels (divide boxes by it to go back) and ``labeled`` (False for unlabeled images).

An image that fails to decode mid-epoch (truncated, deleted, corrupt) is skipped with a
:class:`DatasetWarning` that counts the skips so far, and the next usable image is returned in its
place: training never crashes on one bad file, and stops with :class:`DatasetError` only when no
image at all can be read.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from detkd.data.images import ImageReadError, load_image
from detkd.data.records import DatasetError, DatasetIndex, ImageRecord, sanitize_boxes
from detkd.data.transforms import DetectionTransform, Transformed

__all__ = ["CachedCandidates", "DatasetWarning", "DetectionDataset", "Target"]

Target = dict[str, Any]


class CachedCandidates(Protocol):
    """A teacher's cached candidates per image (:class:`detkd.distill.cache.TeacherCache`):
    ``{"boxes": Float[M, 4] xyxy file pixels, "obj": Float[M], "cls": Float[M, K]}`` or None."""

    def lookup(self, path: Path) -> dict[str, np.ndarray] | None: ...


class DatasetWarning(UserWarning):
    """A sample was skipped or repaired while loading."""


class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """Images and targets of one split.

    Args:
        index: records from one of the readers (:func:`~detkd.data.voc.read_voc`, ...).
        transform: letterbox/augmentation; None returns images at their file size.
    """

    def __init__(self, index: DatasetIndex, transform: DetectionTransform | None = None, seed: int = 0,
                 teacher_cache: CachedCandidates | None = None) -> None:
        index.require_usable()
        self.index = index
        self.transform = transform
        self.teacher_cache = teacher_cache
        self.seed = seed
        self.skipped: list[str] = []  # files skipped in this process, in order
        self._bad: set[int] = set()
        self._epoch: int | None = None
        self._rank = 0
        self._seeded_for: tuple[int | None, int] | None = None

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names

    @property
    def metainfo(self) -> dict[str, Any]:
        """mmengine reads this (class names shown in logs and visualisations)."""
        return {"classes": tuple(self.index.class_names)}

    def __len__(self) -> int:
        return len(self.index.records)

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Seed augmentation from ``(seed, epoch, rank, worker)`` from now on (training calls this
        before every epoch, so a resumed run augments exactly like an uninterrupted one).
        Works with non-persistent DataLoader workers, which copy the dataset each epoch."""
        self._epoch, self._rank = epoch, rank
        self._seeded_for = None

    def _seed_augmentation(self) -> None:
        """Give each DataLoader worker its own augmentation stream, whoever built the loader.

        A forked worker inherits the parent's albumentations state, so without this every worker
        would augment identically. After :meth:`set_epoch` the stream depends only on
        ``(seed, epoch, rank, worker)``; before it, workers use torch's per-worker seed.
        """
        if self.transform is None:
            return
        info = get_worker_info()
        worker = info.id if info is not None else -1
        if self._seeded_for == (self._epoch, worker):
            return
        self._seeded_for = (self._epoch, worker)
        if self._epoch is not None:
            state = np.random.SeedSequence([self.seed, self._epoch, self._rank, worker + 1]).generate_state(1)
            self.transform.reseed(int(state[0]))
        elif info is not None:
            self.transform.reseed(info.seed % 2**32)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        self._seed_augmentation()
        n = len(self)
        for step in range(n):
            j = (i + step) % n
            if j in self._bad:
                continue
            record = self.index.records[j]
            try:
                image = load_image(record.path)
            except ImageReadError as exc:
                self._bad.add(j)
                self.skipped.append(str(record.path))
                warnings.warn(f"{exc.defect} [{len(self.skipped)} skipped so far]", DatasetWarning, stacklevel=2)
                continue
            return self._item(record, image)
        raise DatasetError(f"{self.index.source}: none of the {n} images could be read")

    def _item(self, record: ImageRecord, image: np.ndarray) -> tuple[torch.Tensor, Target]:
        boxes = record.boxes
        height, width = image.shape[:2]
        if (width, height) != (record.width, record.height):  # file changed since it was indexed
            boxes, keep, defects = sanitize_boxes(boxes, width, height, str(record.path))
            record = ImageRecord(record.image_id, record.path, width, height, boxes,
                                 record.labels[keep], record.difficult[keep], record.ann_file, record.labeled)
            warnings.warn(f"{record.path}: image size changed since indexing; boxes re-checked", DatasetWarning, stacklevel=3)
        cached = self.teacher_cache.lookup(record.path) if self.teacher_cache is not None else None
        if self.transform is not None:
            out = self.transform(image, record.boxes, record.labels, record.difficult,
                                 None if cached is None else cached["boxes"])
        else:
            out = Transformed(image, record.boxes, record.labels, record.difficult, (1.0, 1.0))
        target: Target = {
            "boxes": torch.from_numpy(out.boxes.astype(np.float32, copy=False)).reshape(-1, 4),
            "labels": torch.from_numpy(out.labels.astype(np.int64, copy=False)),
            "difficult": torch.from_numpy(out.difficult.astype(bool, copy=False)),
            "image_id": record.image_id,
            "orig_size": (record.height, record.width),
            "scale": out.scale,
            "labeled": record.labeled,
        }
        if cached is not None and self.transform is not None:  # the teacher's candidates, moved like the boxes
            keep = out.extra_keep
            target["teacher_boxes"] = torch.from_numpy(out.extra_boxes).reshape(-1, 4)
            target["teacher_obj"] = torch.from_numpy(cached["obj"][keep].astype(np.float32))
            target["teacher_cls"] = torch.from_numpy(cached["cls"][keep].astype(np.float32))
        return torch.from_numpy(out.image).permute(2, 0, 1).contiguous(), target
