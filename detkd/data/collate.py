"""Batching detection items, and a DataLoader builder that seeds workers properly."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from detkd.data.dataset import Target

__all__ = ["build_dataloader", "collate_detection", "seed_worker"]


def collate_detection(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor | list[torch.Tensor], list[Target]]:
    """``(images, targets)``: images stacked to ``uint8[B, 3, H, W]`` when they share a size
    (they do after a letterbox transform), else a list; targets stay a list of dicts."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    if len({tuple(img.shape) for img in images}) == 1:
        return torch.stack(images), targets
    return images, targets


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and NumPy's global RNGs from torch's
    per-worker seed (distinct per worker and epoch, reproducible from the loader's generator).
    The augmentation pipeline reseeds itself, see ``DetectionDataset``."""
    info = get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed()) % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_dataloader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    sampler: Sampler[int] | None = None,
) -> DataLoader[Any]:
    """A DataLoader with :func:`collate_detection`, seeded shuffling and seeded workers."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_detection,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
