"""YOLO-txt datasets in ultralytics' ``data.yaml`` layout.

``data.yaml`` names the class list (``names``: list or ``{index: name}``) and each split
(``train``/``val``/``test``): a folder of images, a ``.txt`` list of image paths, or a list of
either. Relative split paths are resolved against ``path`` when given, else the yaml's folder (and, as
ultralytics does, without a leading ``../`` when the path as written does not exist);
relative lines in a list file against that file's folder. Labels live beside the images with
``/images/`` replaced by ``/labels/``: one ``cls cx cy w h`` line per box, normalised to [0, 1]
(a polygon line ``cls x1 y1 x2 y2 ...`` counts as its bounding box). An image without a label
file is a background image (reported as an empty annotation, kept).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from detkd.data.images import is_image_file
from detkd.data.records import DatasetError, DatasetIndex, Defect, DefectKind, ImageRecord
from detkd.data.validate import make_record

__all__ = ["find_data_yaml", "label_path", "load_data_yaml", "read_yolo", "resolve_split_path"]


def find_data_yaml(path: str | Path) -> Path:
    """``path`` itself if it is a yaml file, else ``path/data.yaml``."""
    path = Path(path)
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise DatasetError(f"{path}: data.yaml not found")
    return path


def load_data_yaml(data_yaml: Path) -> tuple[dict[str, Any], list[str], Path]:
    """Parse ``data.yaml``: returns (its dict, class names, dataset root)."""
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{data_yaml}: malformed YAML: {exc}") from exc
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{data_yaml}: needs a 'names' entry (list or {{index: name}})")
    names = data["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DatasetError(f"{data_yaml}: 'names' keys must be 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{data_yaml}: 'names' must be a non-empty list or mapping")
    root = Path(data["path"]) if data.get("path") else data_yaml.parent
    if not root.is_absolute():
        root = data_yaml.parent / root
    return data, [str(n) for n in names], root


def label_path(image: Path) -> Path:
    """ultralytics' rule: the last ``/images/`` in the path becomes ``/labels/``, suffix ``.txt``."""
    text = str(image)
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if images in text:
        text = labels.join(text.rsplit(images, 1))
    return Path(text).with_suffix(".txt")


def resolve_split_path(item: Any, root: Path, data_yaml: Path) -> Path:
    """Where a split entry of ``data.yaml`` points, tried as ultralytics tries it: as written (relative
    to ``root``), then without a leading ``../`` (Roboflow exports write ``train: ../train/images``
    for a yaml that sits beside ``train/``).

    Raises:
        DatasetError: none of the places exists; the message names every place tried.
    """
    text = str(item)
    tried = [Path(text) if Path(text).is_absolute() else root / text]
    if text.startswith("../"):
        tried.append(root / text[3:])
    for path in tried:
        if path.exists():
            return path
    raise DatasetError(f"{data_yaml}: split path {text!r} not found (tried {', '.join(str(p) for p in tried)})")


def _split_images(entry: Any, root: Path, data_yaml: Path) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for item in entries:
        path = resolve_split_path(item, root, data_yaml)
        if path.is_dir():
            images.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)))
        elif path.is_file() and path.suffix == ".txt":
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            images.extend(Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines)
        else:
            raise DatasetError(f"{data_yaml}: split path {path} is neither a folder nor a .txt list")
    return images


def _parse_label_line(line: str, n: int, num_classes: int, file: str, defects: list[Defect]) -> tuple[int, list[float]] | None:
    parts = line.split()
    try:
        values = [float(v) for v in parts]
    except ValueError:
        defects.append(Defect(file, DefectKind.MALFORMED_ANNOTATION, f"line {n}: non-numeric value in {line!r}", "dropped box"))
        return None
    if len(values) == 5:
        _, cx, cy, w, h = values
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    elif len(values) >= 7 and len(values) % 2 == 1:  # polygon: class then x y pairs
        xs, ys = values[1::2], values[2::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
    else:
        defects.append(Defect(file, DefectKind.MALFORMED_ANNOTATION, f"line {n}: expected 'cls cx cy w h', got {len(parts)} values", "dropped box"))
        return None
    cls = values[0]
    if not cls.is_integer() or not 0 <= cls < num_classes:
        defects.append(Defect(file, DefectKind.UNKNOWN_CLASS, f"line {n}: class {parts[0]} not in 0..{num_classes - 1}", "dropped box"))
        return None
    return int(cls), box


def _read_labels(path: Path, num_classes: int, defects: list[Defect]) -> tuple[list[int], list[list[float]], list[str], int]:
    """Labels, normalised xyxy boxes, their names for messages, and the count of box lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        defects.append(Defect(str(path), DefectKind.MALFORMED_ANNOTATION, f"cannot read label file: {exc}", "dropped box"))
        return [], [], [], 0
    labels, boxes, names, count = [], [], [], 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        count += 1
        parsed = _parse_label_line(line, n, num_classes, str(path), defects)
        if parsed is not None:
            labels.append(parsed[0])
            boxes.append(parsed[1])
            names.append(f"line {n}")
    return labels, boxes, names, count


def read_yolo(path: str | Path, split: str = "train", check: str = "header", progress: bool = False) -> DatasetIndex:
    """Read one split of a YOLO-txt dataset.

    Args:
        path: the ``data.yaml`` file or the folder holding it.
        split: key in ``data.yaml`` (``train``, ``val``, ``test``).
        check: image check depth, ``"header"`` or ``"full"``.

    Image ids are positions in the split (1..N), images sorted by path within a folder.
    """
    data_yaml = find_data_yaml(path)
    data, class_names, root = load_data_yaml(data_yaml)
    if not data.get(split):
        splits = [k for k in ("train", "val", "test") if data.get(k)]
        raise DatasetError(f"{data_yaml}: no '{split}' split (available: {', '.join(splits) or 'none'})")
    images = _split_images(data[split], root, data_yaml)
    defects: list[Defect] = []
    records: list[ImageRecord] = []
    num_boxes = 0
    for image_id, image in enumerate(tqdm(images, desc=f"YOLO {split}", disable=None if progress else True), start=1):
        labels_file = label_path(image)
        if labels_file.is_file():
            labels, boxes, names, count = _read_labels(labels_file, len(class_names), defects)
        else:
            labels, boxes, names, count = [], [], [], 0
        num_boxes += count
        empty = None
        if count == 0:
            why = "empty label file" if labels_file.is_file() else "no label file"
            empty = Defect(str(labels_file), DefectKind.EMPTY_ANNOTATION, f"{why} (background image)", "kept")
        record = make_record(
            image_id, image, labels_file, boxes, labels, [False] * len(labels), defects,
            check=check, normalized=True, box_names=names, empty_defect=empty,
        )
        if record is not None:
            records.append(record)
    return DatasetIndex(records, class_names, defects, str(data_yaml), num_boxes, None, len(images), root)
