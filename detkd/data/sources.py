"""One place that maps a dataset format to its reader: :func:`read_index` (a path, as the tools take
it) and :func:`read_split` (a config's ``data`` section and a split name, with the seeded hold-out
of a dataset that has no validation split)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from detkd.data.coco import read_coco
from detkd.data.folder import read_folder
from detkd.data.labelimg import read_labelimg
from detkd.data.records import DatasetError, DatasetIndex
from detkd.data.voc import read_voc
from detkd.data.yolo_txt import read_yolo
from detkd.errors import ConfigError

__all__ = ["FORMATS", "HOLDOUT_SEED", "detect_format", "guess_coco_image_dir", "holdout", "read_index", "read_split"]

FORMATS = ("voc", "coco", "yolo", "labelimg", "folder")
HOLDOUT_SEED = 0  # fixed: every training seed validates on the same held-out images


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path``: VOC folder, COCO ``.json`` or export folder, YOLO ``data.yaml`` (or
    its folder), labelImg folders, or a plain image folder (only when it holds no annotation file)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in {".yaml", ".yml"}:
            return "yolo"
        raise DatasetError(f"{path}: cannot tell the format of this file (expected .json or .yaml)")
    from detkd.data.layouts import UnlabeledFolderError, discover

    try:
        return discover(path).format
    except UnlabeledFolderError:
        return "folder"


def guess_coco_image_dir(ann_file: Path) -> Path:
    """Image folder for a COCO file when none is given: the usual places beside ``annotations/``.

    Tries ``JPEGImages/``, ``images/<split>/``, ``<split>/`` and ``images/`` next to the
    annotation folder (``<split>`` from ``instances_<split>.json``), then the file's own folder.
    """
    split = ann_file.stem.removeprefix("instances_")
    base = ann_file.parent.parent
    for candidate in (base / "JPEGImages", base / "images" / split, base / split, base / "images", ann_file.parent):
        if candidate.is_dir():
            return candidate
    return ann_file.parent


def read_index(
    path: str | Path,
    fmt: str | None = None,
    split: str | None = None,
    class_names: list[str] | None = None,
    img_dir: str | Path | None = None,
    check: str = "header",
    progress: bool = False,
) -> DatasetIndex:
    """Read a dataset of any format.

    Args:
        path: VOC root, COCO instances JSON, YOLO ``data.yaml`` (or its folder), or an image folder.
        fmt: ``voc``, ``coco``, ``yolo`` or ``folder``; None detects it from ``path``.
        split: VOC split file / YOLO split key (None: every VOC annotation, YOLO ``train``).
        class_names: class list to enforce (VOC, COCO); None takes it from the data.
        img_dir: COCO image folder (None: guessed, see :func:`guess_coco_image_dir`).
        check: image check depth, ``"header"`` or ``"full"``.
    """
    fmt = fmt or detect_format(path)
    if fmt == "voc":
        return read_voc(path, split, class_names, check, progress)
    if fmt == "coco":
        folder = Path(img_dir) if img_dir is not None else guess_coco_image_dir(Path(path))
        return read_coco(path, folder, class_names, check, progress)
    if fmt == "yolo":
        return read_yolo(path, split or "train", check, progress)
    if fmt == "labelimg":
        return read_labelimg(path, split, class_names, check, progress)
    if fmt == "folder":
        return read_folder(path, recursive=True, check=check, progress=progress)
    raise DatasetError(f"unknown dataset format {fmt!r} (choose from {', '.join(FORMATS)})")


def holdout(index: DatasetIndex, fraction: float, seed: int = HOLDOUT_SEED) -> tuple[DatasetIndex, DatasetIndex]:
    """``index`` split into (train, held-out val): ``round(fraction * N)`` images (at least one, at most
    N - 1) drawn with ``seed``; the same data and seed give the same split."""
    n = len(index.records)
    if n < 2:
        raise DatasetError(f"{index.source}: {n} usable image(s): too few to hold any out for validation; add a val split")
    count = min(n - 1, max(1, round(fraction * n)))
    chosen = set(np.random.default_rng(seed).permutation(n)[:count].tolist())
    train = [r for i, r in enumerate(index.records) if i not in chosen]
    val = [r for i, r in enumerate(index.records) if i in chosen]
    return replace(index, records=train, num_listed=len(train)), replace(index, records=val, defects=[], num_listed=len(val),
                                                                         num_annotated_boxes=sum(r.num_boxes for r in val))


def read_split(data: Mapping[str, Any], split: str, check: str = "header") -> DatasetIndex:
    """Read a config's split (``train``, ``val``, ``test``) from its ``data`` section.

    ``data.splits[split]`` is a VOC split name (None: every XML), a YOLO split key, a labelImg
    folder, or for COCO ``{"ann": file, "img_dir": folder}`` (paths relative to ``data.root``). With
    ``data.holdout`` > 0 and no ``val`` entry, ``val`` is that fraction of the training split (seeded,
    :func:`holdout`) and ``train`` the rest.

    Raises:
        ConfigError: no dataset in the config, or no such split; DatasetError: unusable data.
    """
    if not data or not data.get("root"):
        raise ConfigError("no dataset: pass --data PATH (a dataset folder, COCO JSON or data.yaml) or set data.root in the config")
    splits = dict(data.get("splits") or {})
    fraction = float(data.get("holdout") or 0.0)
    if fraction > 0 and "val" not in splits and split in ("train", "val"):
        train, val = holdout(read_split({**data, "holdout": 0.0}, "train", check), fraction)
        return train if split == "train" else val
    if split not in splits:
        raise ConfigError(f"config key data.splits has no '{split}' entry (has: {', '.join(splits) or 'none'})")
    root, entry, classes = Path(data["root"]), splits[split], data.get("classes")
    fmt = data.get("format", "voc")
    if fmt == "coco":
        ann = root / entry["ann"]
        img_dir = root / entry["img_dir"] if entry.get("img_dir") else guess_coco_image_dir(ann)
        return read_coco(ann, img_dir, classes, check)
    if fmt in ("voc", "labelimg"):
        return read_index(root, fmt, entry, classes, check=check)
    if fmt == "yolo":
        return read_yolo(root, entry, check)
    raise ConfigError(f"config key data.format must be voc, coco, yolo or labelimg, not {fmt!r}")
