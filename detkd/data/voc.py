"""Pascal VOC layout: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/{split}.txt``.

XML is parsed with defusedxml (entity expansion and external references are refused), so an
annotation file from an untrusted source cannot blow up memory or read local files.
Coordinates are taken as written (box width = ``xmax - xmin``), as ultralytics and MMDetection do.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from tqdm import tqdm

from detkd.data.images import IMAGE_EXTENSIONS, is_image_file
from detkd.data.records import DatasetError, DatasetIndex, Defect, DefectKind, ImageRecord
from detkd.data.validate import make_record

__all__ = ["VOCObject", "VOCAnnotation", "make_voc_record", "parse_voc_xml", "read_voc", "voc_splits"]


@dataclass
class VOCObject:
    name: str
    box: list[float]  # xmin, ymin, xmax, ymax as written
    difficult: bool
    index: int  # position among the file's <object> elements, for messages


@dataclass
class VOCAnnotation:
    filename: str | None
    size: tuple[int, int] | None  # (width, height) as written
    objects: list[VOCObject] = field(default_factory=list)
    num_raw_objects: int = 0  # <object> elements, including malformed ones


def _text(element: ET.Element, path: str) -> str | None:
    found = element.find(path)
    return found.text.strip() if found is not None and found.text is not None else None


def _parse_object(obj: ET.Element, i: int, file: str, defects: list[Defect]) -> VOCObject | None:
    name = _text(obj, "name")
    values = [_text(obj, f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax")]
    try:
        if not name:
            raise ValueError("no <name>")
        box = [float(v) for v in values]  # type: ignore[arg-type]  # None raises TypeError
        difficult = bool(int(float(_text(obj, "difficult") or 0)))
    except (TypeError, ValueError) as exc:
        detail = f"object {i} ({name or '?'}): bad or missing <bndbox>/<name>/<difficult>: {exc}"
        defects.append(Defect(file, DefectKind.MALFORMED_ANNOTATION, detail, "dropped box"))
        return None
    return VOCObject(name, box, difficult, i)


def parse_voc_xml(path: Path, defects: list[Defect]) -> VOCAnnotation | None:
    """Parse one annotation file; None (with a defect) when the XML itself is unusable."""
    try:
        root = SafeET.parse(path).getroot()
    except (ET.ParseError, DefusedXmlException, OSError) as exc:
        defects.append(Defect(str(path), DefectKind.MALFORMED_ANNOTATION, f"cannot parse XML: {exc}", "skipped image"))
        return None
    size = None
    width, height = _text(root, "size/width"), _text(root, "size/height")
    if width and height:
        try:
            size = (int(float(width)), int(float(height)))
        except ValueError:
            size = None
    raw = root.findall("object")
    objects = [o for i, obj in enumerate(raw) if (o := _parse_object(obj, i, str(path), defects)) is not None]
    return VOCAnnotation(_text(root, "filename"), size, objects, len(raw))


def voc_splits(root: Path) -> list[str]:
    """Names of the split files under ``ImageSets/Main`` (without ``.txt``)."""
    return sorted(p.stem for p in (Path(root) / "ImageSets" / "Main").glob("*.txt"))


def _split_ids(root: Path, split: str | None) -> list[str]:
    if split is None:
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise DatasetError(f"{split_file}: split file not found (available: {', '.join(voc_splits(root)) or 'none'})")
    # First token per line: per-class files ("id  1") share the format of the main ones.
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def _find_image(root: Path, image_id: str, filename: str | None) -> Path:
    folder = root / "JPEGImages"
    if filename and (folder / filename).is_file():
        return folder / filename
    for ext in (".jpg", *sorted(IMAGE_EXTENSIONS - {".jpg"})):
        for candidate in (folder / f"{image_id}{ext}", folder / f"{image_id}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return folder / (filename or f"{image_id}.jpg")  # does not exist: reported as missing


def read_voc(
    root: str | Path,
    split: str | None = None,
    class_names: list[str] | None = None,
    check: str = "header",
    progress: bool = False,
) -> DatasetIndex:
    """Read one split of a VOC-layout dataset.

    Args:
        root: folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: split file name (``train``, ``val``, ...); None reads every XML in ``Annotations``.
        class_names: the class list (index = label). None discovers the names from every XML
            file in ``Annotations`` (all splits, so train and val agree), sorted alphabetically.
        check: image check depth, ``"header"`` (fast) or ``"full"`` (decode every image).
        progress: show a progress bar.

    Image ids are positions in the split (1..N), kept stable when an image is skipped. An id the
    split lists without an XML is a ``missing_annotation`` defect (the image is skipped); with
    ``split=None``, so is an image in ``JPEGImages/`` that no XML annotates. Both count as listed.
    """
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise DatasetError(f"{root}: not a VOC dataset (no Annotations/ folder)")
    ids = _split_ids(root, split)
    defects: list[Defect] = []
    parsed = {i: parse_voc_xml(root / "Annotations" / f"{i}.xml", defects) for i in _existing(root, ids, defects)}
    if class_names is None:
        class_names = _discover_classes(root, parsed)
    lookup = {name: label for label, name in enumerate(class_names)}
    records: list[ImageRecord] = []
    used: set[Path] = set()
    num_boxes = 0
    for image_id, stem in enumerate(tqdm(ids, desc=f"VOC {split or 'all'}", disable=None if progress else True), start=1):
        ann = parsed.get(stem)
        if ann is None:
            continue
        num_boxes += ann.num_raw_objects
        image = _find_image(root, stem, ann.filename)
        used.add(image)
        record = make_voc_record(image_id, image, root / "Annotations" / f"{stem}.xml", ann, lookup, defects, check)
        if record is not None:
            records.append(record)
    orphans = _unannotated_images(root, set(ids), used, defects) if split is None else 0
    return DatasetIndex(
        records, list(class_names), defects, str(root), num_boxes, None, len(ids) + orphans, root / "JPEGImages"
    )


def make_voc_record(
    image_id: int,
    image: Path,
    ann_file: Path,
    ann: VOCAnnotation,
    lookup: dict[str, int],
    defects: list[Defect],
    check: str,
) -> ImageRecord | None:
    """The record of one parsed XML (unknown classes dropped), or None when its image is unusable."""
    objects, names = [], []
    for obj in ann.objects:
        if obj.name in lookup:
            objects.append(obj)
            names.append(f"object {obj.index} ({obj.name})")
        else:
            detail = f"object {obj.index}: class {obj.name!r} is not in the class list"
            defects.append(Defect(str(ann_file), DefectKind.UNKNOWN_CLASS, detail, "dropped box"))
    empty = None
    if ann.num_raw_objects == 0:
        empty = Defect(str(ann_file), DefectKind.EMPTY_ANNOTATION, "no <object> elements", "kept")
    return make_record(
        image_id,
        image,
        ann_file,
        [o.box for o in objects],
        [lookup[o.name] for o in objects],
        [o.difficult for o in objects],
        defects,
        check=check,
        declared_size=ann.size,
        box_names=names,
        empty_defect=empty,
    )


def _unannotated_images(root: Path, ids: set[str], used: set[Path], defects: list[Defect]) -> int:
    """Report every image in ``JPEGImages/`` that no XML annotates (by stem or ``<filename>``)."""
    folder = root / "JPEGImages"
    if not folder.is_dir():
        return 0
    images = (p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    orphans = sorted(p for p in images if p.stem not in ids and p not in used)
    for image in orphans:
        detail = f"image in JPEGImages/ without Annotations/{image.stem}.xml"
        defects.append(Defect(str(image), DefectKind.MISSING_ANNOTATION, detail, "skipped image"))
    return len(orphans)


def _existing(root: Path, ids: list[str], defects: list[Defect]) -> list[str]:
    found = []
    for stem in ids:
        ann_file = root / "Annotations" / f"{stem}.xml"
        if ann_file.is_file():
            found.append(stem)
        else:
            defects.append(Defect(str(ann_file), DefectKind.MISSING_ANNOTATION, "listed in the split, no XML", "skipped image"))
    return found


def _discover_classes(root: Path, parsed: dict[str, VOCAnnotation | None]) -> list[str]:
    names: set[str] = set()
    for xml_file in sorted((root / "Annotations").glob("*.xml")):
        ann = parsed[xml_file.stem] if xml_file.stem in parsed else parse_voc_xml(xml_file, [])
        if ann is not None:
            names.update(o.name for o in ann.objects)
    if not names:
        raise DatasetError(f"{root}: no object names found in Annotations/*.xml; pass the class list")
    return sorted(names)
