"""COCO instances JSON, read through pycocotools.

Category ids (any integers, COCO's own have gaps) map to contiguous labels ``0..K-1`` sorted by
id; ``DatasetIndex.category_ids[label]`` maps back. Crowd annotations (``iscrowd=1``) become
``difficult`` boxes, which evaluation ignores and training may skip. Image ids are COCO's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO
from tqdm import tqdm

from detkd.data.records import DatasetError, DatasetIndex, Defect, DefectKind, ImageRecord
from detkd.data.validate import make_record

__all__ = ["load_coco_json", "read_coco", "to_pycocotools"]


def load_coco_json(ann_file: str | Path) -> dict[str, Any]:
    """Load and structurally check a COCO instances file.

    Raises:
        DatasetError: missing file, malformed JSON (with line and column), missing top-level
            lists, or duplicate image/category ids — anything that makes the whole file unusable.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DatasetError(f"{ann_file}: annotation file not found")
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{ann_file}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{ann_file}: not UTF-8 text: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: top level must be an object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: missing or non-list '{key}'")
    for key in ("images", "categories"):
        ids = [item.get("id") if isinstance(item, dict) else None for item in data[key]]
        if any(not isinstance(i, int) for i in ids):
            raise DatasetError(f"{ann_file}: every entry of '{key}' needs an integer 'id'")
        if len(set(ids)) != len(ids):
            raise DatasetError(f"{ann_file}: duplicate ids in '{key}'")
    return data


def to_pycocotools(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` object over an already-loaded dict, without its console prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _valid_bbox(bbox: Any) -> bool:
    return (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    )


def _split_annotations(
    data: dict[str, Any], ann_file: Path, cat_to_label: dict[int, int], defects: list[Defect]
) -> list[dict[str, Any]]:
    """Annotations that can be used, with a defect for each one that cannot."""
    image_ids = {img["id"] for img in data["images"]}
    usable = []
    for i, ann in enumerate(data["annotations"]):
        where = f"annotation {ann.get('id', f'#{i}') if isinstance(ann, dict) else f'#{i}'}"
        if not isinstance(ann, dict) or not _valid_bbox(ann.get("bbox")):
            defects.append(Defect(str(ann_file), DefectKind.MALFORMED_ANNOTATION, f"{where}: bbox is not 4 finite numbers", "dropped box"))
        elif ann.get("image_id") not in image_ids:
            defects.append(Defect(str(ann_file), DefectKind.MALFORMED_ANNOTATION, f"{where}: unknown image_id {ann.get('image_id')!r}", "dropped box"))
        elif ann.get("category_id") not in cat_to_label:
            defects.append(Defect(str(ann_file), DefectKind.UNKNOWN_CLASS, f"{where}: unknown category_id {ann.get('category_id')!r}", "dropped box"))
        else:
            usable.append(ann)
    return usable


def _drop_supercategory_entries(cats: list[dict[str, Any]], annotations: list[Any], ann_file: Path,
                                defects: list[Defect]) -> list[dict[str, Any]]:
    """Categories without the phantom ones: a category that no annotation uses and whose name is
    another category's ``supercategory`` (Roboflow exports list the dataset's own name that way,
    e.g. ``{"id": 0, "name": "cells", "supercategory": "none"}``); each drop is reported."""
    used = {a.get("category_id") for a in annotations if isinstance(a, dict)}
    parents = {str(c.get("supercategory")) for c in cats if c.get("supercategory") is not None}
    kept = []
    for cat in cats:
        name = str(cat.get("name", cat["id"]))
        if cat["id"] not in used and name in parents and any(str(c.get("name")) != name for c in cats):
            detail = f"category {cat['id']} ({name!r}) is only a supercategory: no annotation uses it"
            defects.append(Defect(str(ann_file), DefectKind.UNUSED_CATEGORY, detail, "class dropped"))
        else:
            kept.append(cat)
    return kept


def read_coco(
    ann_file: str | Path,
    img_dir: str | Path,
    class_names: list[str] | None = None,
    check: str = "header",
    progress: bool = False,
) -> DatasetIndex:
    """Read a COCO instances file and its image folder.

    Args:
        ann_file: instances JSON.
        img_dir: folder that the images' ``file_name`` are relative to.
        class_names: expected class list; when given, categories are matched by name and a
            category not in the list is an unknown class. None uses the file's categories, less
            the supercategory-only entries annotation tools add (reported as ``unused_category``).
        check: image check depth, ``"header"`` or ``"full"``.
    """
    ann_file, img_dir = Path(ann_file), Path(img_dir)
    data = load_coco_json(ann_file)
    defects: list[Defect] = []
    cats = sorted(data["categories"], key=lambda c: c["id"])
    if class_names is None:
        cats = _drop_supercategory_entries(cats, data["annotations"], ann_file, defects)
    names = [str(c.get("name", c["id"])) for c in cats]
    if class_names is None:
        class_names, category_ids = names, [c["id"] for c in cats]
    else:
        by_name = {c_name: c["id"] for c_name, c in zip(names, cats, strict=True)}
        unused = iter(range(max([c["id"] for c in cats], default=0) + 1, 1 << 31))
        # A listed class that the file lacks gets a fresh id, so converted output stays valid.
        category_ids = [by_name[name] if name in by_name else next(unused) for name in class_names]
    cat_to_label = {cid: label for label, cid in enumerate(category_ids)}
    num_boxes = len(data["annotations"])
    data = {**data, "annotations": _split_annotations(data, ann_file, cat_to_label, defects)}
    coco = to_pycocotools(data)
    records: list[ImageRecord] = []
    for img in tqdm(data["images"], desc=f"COCO {ann_file.name}", disable=None if progress else True):
        anns = coco.imgToAnns.get(img["id"], [])
        empty = None if anns else Defect(
            str(ann_file), DefectKind.EMPTY_ANNOTATION, f"image {img['id']} has no annotations", "kept"
        )
        declared = (img["width"], img["height"]) if {"width", "height"} <= img.keys() else None
        record = make_record(
            img["id"],
            img_dir / str(img.get("file_name", "")),
            ann_file,
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            [cat_to_label[a["category_id"]] for a in anns],
            [bool(a.get("iscrowd", 0)) or bool(a.get("difficult", 0)) for a in anns],
            defects,
            check=check,
            declared_size=declared,
            box_names=[f"annotation {a.get('id')} (image {img['id']})" for a in anns],
            empty_defect=empty,
        )
        if record is not None:
            records.append(record)
    return DatasetIndex(records, list(class_names), defects, str(ann_file), num_boxes, category_ids, len(data["images"]), img_dir)
