"""Unlabeled image folders: every jpg/jpeg/png/bmp file (extensions compared case-insensitively)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from detkd.data.images import ImageReadError, check_image, is_image_file
from detkd.data.records import DatasetError, DatasetIndex, Defect, ImageRecord

__all__ = ["read_folder"]


def read_folder(root: str | Path, recursive: bool = False, check: str = "header", progress: bool = False) -> DatasetIndex:
    """Index the images of a folder as unlabeled records (``labeled=False``, no boxes).

    Args:
        root: the folder.
        recursive: also look in sub-folders.
        check: image check depth, ``"header"`` or ``"full"``; unusable images are skipped with a defect.

    Image ids are positions in path order (1..N).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: image folder not found")
    pattern = root.rglob("*") if recursive else root.iterdir()
    images = sorted(p for p in pattern if p.is_file() and is_image_file(p))
    records: list[ImageRecord] = []
    defects: list[Defect] = []
    for image_id, path in enumerate(tqdm(images, desc=f"images {root.name}", disable=None if progress else True), start=1):
        try:
            width, height = check_image(path, check)
        except ImageReadError as exc:
            defects.append(exc.defect)
            continue
        records.append(ImageRecord(image_id, path, width, height, labeled=False))
    return DatasetIndex(records, [], defects, str(root), 0, None, len(images), root)
