"""One entry point to read any supported dataset format into a :class:`DatasetIndex`."""

from __future__ import annotations

from pathlib import Path

from detkd.data.coco import read_coco
from detkd.data.folder import read_folder
from detkd.data.records import DatasetError, DatasetIndex
from detkd.data.voc import read_voc
from detkd.data.yolo_txt import read_yolo

__all__ = ["FORMATS", "detect_format", "guess_coco_image_dir", "read_index"]

FORMATS = ("voc", "coco", "yolo", "folder")


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path``: VOC folder, COCO ``.json``, YOLO ``data.yaml`` (or its folder),
    or a plain image folder."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in {".yaml", ".yml"}:
            return "yolo"
        raise DatasetError(f"{path}: cannot tell the format of this file (expected .json or .yaml)")
    if (path / "Annotations").is_dir():
        return "voc"
    if (path / "data.yaml").is_file():
        return "yolo"
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
    if fmt == "folder":
        return read_folder(path, recursive=True, check=check, progress=progress)
    raise DatasetError(f"unknown dataset format {fmt!r} (choose from {', '.join(FORMATS)})")
