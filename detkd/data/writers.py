"""Write a :class:`~detkd.data.records.DatasetIndex` as Pascal VOC, COCO JSON or YOLO-txt files.

Readers turn any format into records and these writers turn records into any format, so every
conversion is ``read_X → write_Y`` and all formats agree on boxes by construction. Every file is
written atomically (see :mod:`detkd.fileio`).

Coordinates: records hold continuous xyxy pixels. VOC XML stores them as given (width =
``xmax - xmin``, as ultralytics' and MMDetection's VOC readers assume); COCO stores
``[x, y, w, h]``; YOLO stores ``cls cx cy w h`` normalised by the image size.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET  # writing only; reading uses defusedxml
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detkd.data.records import DatasetIndex, ImageRecord
from detkd.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["coco_dict", "voc_xml", "write_coco", "write_voc", "write_yolo"]


def _num(value: float) -> str:
    """Shortest exact-enough text for a coordinate: ``12`` for 12.0, ``12.25`` for 12.25."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:.4f}".rstrip("0")


def _place_image(record: ImageRecord, dest: Path) -> None:
    """Make ``dest`` hold the record's image: nothing if it already does, else hard-link or copy."""
    if dest.exists() and dest.resolve() == record.path.resolve():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(record.path, dest)
    except OSError:  # other filesystem, or links not allowed
        shutil.copy2(record.path, dest)


def voc_xml(record: ImageRecord, class_names: list[str], filename: str) -> bytes:
    """Pascal VOC annotation XML of one record (UTF-8 bytes)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(record.width)
    ET.SubElement(size, "height").text = str(record.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for box, label, difficult in zip(record.boxes, record.labels, record.difficult, strict=True):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[int(label)]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bnd = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(bnd, key).text = _num(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n"


def write_voc(index: DatasetIndex, out_root: str | Path, split: str) -> Path:
    """Write ``Annotations/*.xml``, ``JPEGImages/`` and ``ImageSets/Main/{split}.txt`` under ``out_root``.

    Images not already in ``out_root/JPEGImages`` are hard-linked or copied there. Unlabeled
    records are skipped (VOC has no way to say "not annotated"). Returns the split file.
    """
    out_root = Path(out_root)
    ids: list[str] = []
    for record in index.records:
        if not record.labeled:
            continue
        stem = record.path.stem
        _place_image(record, out_root / "JPEGImages" / record.path.name)
        atomic_write_bytes(out_root / "Annotations" / f"{stem}.xml", voc_xml(record, index.class_names, record.path.name))
        ids.append(stem)
    return atomic_write_text(out_root / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{i}\n" for i in ids))


def _relative_name(path: Path, img_root: str | Path | None) -> str:
    """``file_name`` for COCO: relative to ``img_root`` when inside it, else the absolute path."""
    if img_root is None:
        return path.name
    try:
        return path.resolve().relative_to(Path(img_root).resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def coco_dict(index: DatasetIndex, img_root: str | Path | None = None) -> dict[str, Any]:
    """COCO instances dict of the labeled records.

    Image ids are the records' ids, category ids ``index.category_ids`` (1..K in class order
    unless the source was COCO), annotation ids 1..M. ``file_name`` is relative to ``img_root``
    when given (else the bare file name). The VOC ``difficult`` flag is kept as an extra
    ``"difficult"`` key that pycocotools ignores and the VOC AP of :mod:`detkd.engine.metrics` honours.
    """
    assert index.category_ids is not None
    images, annotations = [], []
    for record in index.records:
        if not record.labeled:
            continue
        name = _relative_name(record.path, img_root)
        images.append({"id": record.image_id, "file_name": name, "width": record.width, "height": record.height})
        for box, label, difficult in zip(record.boxes, record.labels, record.difficult, strict=True):
            x1, y1, x2, y2 = (round(float(v), 4) for v in box)
            w, h = round(x2 - x1, 4), round(y2 - y1, 4)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record.image_id,
                    "category_id": index.category_ids[int(label)],
                    "bbox": [x1, y1, w, h],
                    "area": round(w * h, 4),
                    "iscrowd": 0,
                    "difficult": int(difficult),
                }
            )
    categories = [
        {"id": cid, "name": name, "supercategory": "none"}
        for cid, name in zip(index.category_ids, index.class_names, strict=True)
    ]
    return {
        "info": {"description": f"converted by detkd from {index.source}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_coco(index: DatasetIndex, out_file: str | Path, img_root: str | Path | None = None) -> Path:
    """Write :func:`coco_dict` to ``out_file`` atomically; returns the path."""
    return atomic_write_json(out_file, coco_dict(index, img_root), indent=None)


def _yolo_lines(record: ImageRecord) -> str:
    lines = []
    for box, label in zip(record.boxes.astype(np.float64), record.labels, strict=True):
        x1, y1, x2, y2 = box
        cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
        w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
        lines.append(f"{int(label)} {cx:.10g} {cy:.10g} {w:.10g} {h:.10g}\n")
    return "".join(lines)


def write_yolo(index: DatasetIndex, out_root: str | Path, split: str) -> Path:
    """Write ultralytics' layout: ``images/{split}/``, ``labels/{split}/*.txt`` and ``data.yaml``.

    ``data.yaml`` keeps the splits already listed in it, so calling this once per split builds a
    complete dataset. Returns the ``data.yaml`` path.
    """
    out_root = Path(out_root)
    for record in index.records:
        _place_image(record, out_root / "images" / split / record.path.name)
        if record.labeled:
            atomic_write_text(out_root / "labels" / split / f"{record.path.stem}.txt", _yolo_lines(record))
    data_yaml = out_root / "data.yaml"
    data: dict[str, Any] = {}
    if data_yaml.exists():
        data = yaml.safe_load(data_yaml.read_text()) or {}
        if data.get("names") and list(dict(data["names"]).values()) != index.class_names:
            raise ValueError(f"{data_yaml}: class names {data['names']} differ from {index.class_names}")
    # No "path" key: ultralytics then resolves the split folders against this file's own folder.
    data.update({split: f"images/{split}", "names": dict(enumerate(index.class_names))})
    return atomic_write_text(data_yaml, yaml.safe_dump(data, sort_keys=False))
