"""Pascal VOC XML beside its images, as labelImg (and CVAT's "PASCAL VOC" per-folder export) writes it.

A folder holds ``photo.JPG`` and ``photo.xml`` side by side; a dataset is one such folder or one per
split (``train/``, ``valid/``, ``test/``). There is no ``ImageSets/``, extensions come in any case,
and the XML's ``<filename>``/``<path>`` name the annotator's own disk, so the image is always the
file beside the XML with the same stem. An image without its XML is a ``missing_annotation`` (the
image is skipped: an unannotated image is not known to be background); an XML without an image is
a ``missing_image``.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from detkd.data.images import is_image_file
from detkd.data.records import DatasetError, DatasetIndex, Defect, DefectKind, ImageRecord
from detkd.data.voc import VOCAnnotation, make_voc_record, parse_voc_xml

__all__ = ["has_labelimg_pairs", "labelimg_classes", "read_labelimg"]


def _pairs(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and XML files of ``folder`` (not its sub-folders), by stem."""
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    images = {p.stem: p for p in files if is_image_file(p)}
    xmls = {p.stem: p for p in files if p.suffix.lower() == ".xml"}
    return images, xmls


def has_labelimg_pairs(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image with its XML beside it."""
    images, xmls = _pairs(Path(folder))
    return bool(images.keys() & xmls.keys())


def labelimg_classes(root: Path) -> list[str]:
    """Object names of every XML under ``root`` (all split folders, so train and val agree), sorted."""
    names: set[str] = set()
    for xml_file in sorted(Path(root).rglob("*")):
        if xml_file.is_file() and xml_file.suffix.lower() == ".xml":
            ann = parse_voc_xml(xml_file, [])
            if ann is not None:
                names.update(o.name for o in ann.objects)
    if not names:
        raise DatasetError(f"{root}: no object names in its XML files; pass the class list")
    return sorted(names)


def read_labelimg(
    root: str | Path,
    split: str | None = None,
    class_names: list[str] | None = None,
    check: str = "header",
    progress: bool = False,
) -> DatasetIndex:
    """Read one folder of images with their XML beside them.

    Args:
        root: the dataset folder.
        split: the split's sub-folder (``train``, ``valid``, ...); None or ``"."``: ``root`` itself.
        class_names: the class list; None: every object name under ``root``, sorted.
        check: image check depth, ``"header"`` or ``"full"``.

    Image ids are positions in the folder (1..N, images and XML files sorted by stem).
    """
    root = Path(root)
    folder = root / split if split not in (None, ".") else root
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    images, xmls = _pairs(folder)
    if not xmls:
        raise DatasetError(f"{folder}: no .xml annotation files beside the images")
    class_names = class_names or labelimg_classes(root)
    lookup = {name: label for label, name in enumerate(class_names)}
    defects: list[Defect] = []
    records: list[ImageRecord] = []
    stems = sorted(images.keys() | xmls.keys())
    num_boxes = 0
    for image_id, stem in enumerate(tqdm(stems, desc=f"labelImg {folder.name}", disable=None if progress else True), start=1):
        if stem not in xmls:
            defects.append(Defect(str(images[stem]), DefectKind.MISSING_ANNOTATION, f"no {stem}.xml beside the image", "skipped image"))
            continue
        ann: VOCAnnotation | None = parse_voc_xml(xmls[stem], defects)
        if ann is None:
            continue
        num_boxes += ann.num_raw_objects
        image = images.get(stem, folder / f"{stem}.jpg")  # missing: reported by the record check
        record = make_voc_record(image_id, image, xmls[stem], ann, lookup, defects, check)
        if record is not None:
            records.append(record)
    return DatasetIndex(records, list(class_names), defects, str(folder), num_boxes, None, len(stems), folder)
