"""Find a dataset's layout from a path, as users bring data: a VOC root, a COCO JSON or a COCO export
folder (Roboflow ``train/_annotations.coco.json``, CVAT / COCO ``annotations/instances_*.json``), an
ultralytics / Roboflow ``data.yaml`` (or its folder), or labelImg folders (XML beside the images).

:func:`discover` returns a :class:`Layout`: the format, the root, every split it found (``valid``
is called ``val``) and the ``data`` config section that reads them (what ``--data PATH`` puts in a
run's config). A folder that holds annotation files in no layout detkd reads is an error naming
what it found, never "an unlabeled image folder".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detkd.data.images import is_image_file
from detkd.data.labelimg import has_labelimg_pairs
from detkd.data.records import DatasetError

__all__ = ["DEFAULT_HOLDOUT", "Layout", "SPLIT_NAMES", "UnlabeledFolderError", "discover"]

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
               "default": "train", "trainval": "train"}
DEFAULT_HOLDOUT = 0.1  # fraction of the training split held out for validation when a dataset has no val split
ROBOFLOW_COCO = "_annotations.coco.json"


class UnlabeledFolderError(DatasetError):
    """A folder of images without any annotation file: not a training dataset (it can be unlabeled data)."""


@dataclass
class Layout:
    """A dataset as found on disk.

    Attributes:
        format: ``voc``, ``coco``, ``yolo`` or ``labelimg`` (a ``data.format``).
        root: the dataset's root (``data.root``); for YOLO the ``data.yaml`` file.
        splits: split name (``train``/``val``/``test``) -> entry as ``data.splits`` takes it.
        found: what was looked at, for ``check_dataset``'s report (split name -> where).
    """

    format: str
    root: Path
    splits: dict[str, Any]
    found: dict[str, str] = field(default_factory=dict)

    def data_config(self, holdout: float = DEFAULT_HOLDOUT) -> dict[str, Any]:
        """The ``data`` config section; without a ``val`` split, ``holdout`` of train becomes val."""
        return {"format": self.format, "root": str(self.root), "splits": dict(self.splits), "classes": None,
                "generate": None, "holdout": 0.0 if "val" in self.splits else holdout}


def discover(path: str | Path) -> Layout:
    """The layout of the dataset at ``path`` (see the module docstring).

    Raises:
        DatasetError: nothing there, or annotations in a layout detkd does not read (named).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        return _from_file(path)
    for finder in (_yolo_folder, _voc_root, _coco_annotations_folder, _roboflow_coco, _labelimg):
        layout = finder(path)
        if layout is not None:
            return layout
    annotations = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".xml", ".json", ".txt", ".yaml")]
    if annotations:
        shown = ", ".join(str(p.relative_to(path)) for p in annotations[:3])
        raise DatasetError(f"{path}: holds annotation files ({shown}{' ...' if len(annotations) > 3 else ''}) in no layout "
                           "detkd reads (VOC root, COCO JSON or export folder, data.yaml, XML beside images)")
    if any(is_image_file(p) for p in path.rglob("*")):
        raise UnlabeledFolderError(f"{path}: images without annotations; training needs a labeled dataset "
                           "(an image folder can be unlabeled.folder for distillation)")
    raise DatasetError(f"{path}: no images and no annotations found")


def _split_name(name: str) -> str | None:
    lowered = name.lower()
    for prefix, split in SPLIT_NAMES.items():
        if lowered == prefix or lowered.startswith(prefix) and not lowered[len(prefix):].isalpha():
            return split
    return None


def _from_file(path: Path) -> Layout:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _yolo(path)
    if suffix == ".json":
        split = "train"
        img_dir = path.parent if path.name == ROBOFLOW_COCO else None
        entry = {"ann": path.name, "img_dir": str(img_dir.relative_to(path.parent)) if img_dir else None}
        return Layout("coco", path.parent, {split: entry}, {split: str(path)})
    raise DatasetError(f"{path}: cannot tell the dataset format of this file (expected a COCO .json or a data.yaml)")


def _yolo(data_yaml: Path) -> Layout:
    from detkd.data.yolo_txt import load_data_yaml

    data, _, _ = load_data_yaml(data_yaml)
    splits = {name: name for name in ("train", "val", "test") if data.get(name)}
    if "train" not in splits:
        raise DatasetError(f"{data_yaml}: no 'train' split")
    return Layout("yolo", data_yaml, splits, {k: f"{data_yaml}: {k}: {data[k]}" for k in splits})


def _yolo_folder(path: Path) -> Layout | None:
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return _yolo(path / name)
    return None


def _voc_root(path: Path) -> Layout | None:
    if not (path / "Annotations").is_dir():
        return None
    from detkd.data.voc import voc_splits

    files = voc_splits(path)
    splits: dict[str, Any] = {}
    for name in files:  # train, val, test, trainval: the first file of each kind wins
        split = _split_name(name)
        if split and split not in splits and not (split == "train" and name == "trainval" and "train" in files):
            splits[split] = name
    if "train" not in splits:
        splits["train"] = None  # every XML in Annotations/
    found = {k: str(path / "ImageSets" / "Main" / f"{v}.txt") if v else str(path / "Annotations") for k, v in splits.items()}
    return Layout("voc", path, splits, found)


def _coco_entry(ann: Path, root: Path) -> dict[str, Any]:
    from detkd.data.sources import guess_coco_image_dir

    img_dir = guess_coco_image_dir(ann)
    return {"ann": str(ann.relative_to(root)), "img_dir": str(img_dir.relative_to(root)) if img_dir.is_relative_to(root) else str(img_dir)}


def _coco_annotations_folder(path: Path) -> Layout | None:
    folder = path / "annotations"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    splits: dict[str, Any] = {}
    for ann in files:
        split = _split_name(ann.stem.removeprefix("instances_"))
        if split and split not in splits:
            splits[split] = _coco_entry(ann, path)
    if "train" not in splits and len(files) == 1:
        splits["train"] = _coco_entry(files[0], path)
    if not splits:
        return None
    return Layout("coco", path, splits, {k: str(path / v["ann"]) for k, v in splits.items()})


def _roboflow_coco(path: Path) -> Layout | None:
    splits: dict[str, Any] = {}
    if (path / ROBOFLOW_COCO).is_file():
        splits["train"] = {"ann": ROBOFLOW_COCO, "img_dir": "."}
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        split = _split_name(sub.name)
        if split and split not in splits and (sub / ROBOFLOW_COCO).is_file():
            splits[split] = {"ann": f"{sub.name}/{ROBOFLOW_COCO}", "img_dir": sub.name}
    if not splits:
        return None
    return Layout("coco", path, splits, {k: str(path / v["ann"]) for k, v in splits.items()})


def _labelimg(path: Path) -> Layout | None:
    splits: dict[str, Any] = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        split = _split_name(sub.name)
        if split and split not in splits and has_labelimg_pairs(sub):
            splits[split] = sub.name
    if not splits and has_labelimg_pairs(path):
        splits["train"] = "."
    if not splits:
        return None
    if "train" not in splits:
        raise DatasetError(f"{path}: labelImg split folders {sorted(splits.values())} but no train folder")
    return Layout("labelimg", path, splits, {k: str(path / v) for k, v in splits.items()})
