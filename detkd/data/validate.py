"""Turn one image's parsed annotation into a validated :class:`ImageRecord` (shared by all readers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detkd.data.images import ImageReadError, check_image
from detkd.data.records import Defect, DefectKind, ImageRecord, sanitize_boxes

__all__ = ["make_record"]


def make_record(
    image_id: int,
    image_path: Path,
    ann_file: Path,
    boxes: list[list[float]],
    labels: list[int],
    difficult: list[bool],
    defects: list[Defect],
    check: str = "header",
    declared_size: tuple[int, int] | None = None,
    normalized: bool = False,
    box_names: list[str] | None = None,
    empty_defect: Defect | None = None,
) -> ImageRecord | None:
    """Check the image, then validate its boxes against the image's real size.

    Args:
        boxes: xyxy per box, absolute pixels (or fractions of the image size if ``normalized``).
        labels, difficult: one per box.
        defects: list the problems are appended to.
        check: image check depth, ``"header"`` or ``"full"`` (see :func:`check_image`).
        declared_size: ``(width, height)`` written in the annotation, compared to the image.
        normalized: boxes are fractions of the image size (YOLO-txt).
        box_names: how each box is called in defect messages (e.g. ``"object 3 (dog)"``).
        empty_defect: the reader's ``empty_annotation`` defect when the annotation has no boxes;
            it is reported only if the image is usable, so a missing or unreadable image without
            boxes is reported once, by its image defect (it is skipped, not kept as a background).

    Returns:
        The record, or None when the image is unusable (the defect says why).
    """
    try:
        width, height = check_image(image_path, check)
    except ImageReadError as exc:
        defects.append(exc.defect)
        return None
    if empty_defect is not None:
        defects.append(empty_defect)
    if declared_size is not None and tuple(declared_size) != (width, height):
        detail = f"annotation says {declared_size[0]}x{declared_size[1]}, image is {width}x{height}"
        defects.append(Defect(str(ann_file), DefectKind.SIZE_MISMATCH, detail, "kept (image size used)"))
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if normalized:
        box_array = box_array * np.array([width, height, width, height], dtype=np.float64)
    kept, keep, box_defects = sanitize_boxes(box_array, width, height, str(ann_file), box_names)
    defects.extend(box_defects)
    return ImageRecord(
        image_id=image_id,
        path=image_path,
        width=width,
        height=height,
        boxes=kept,
        labels=np.asarray(labels, dtype=np.int64).reshape(-1)[keep],
        difficult=np.asarray(difficult, dtype=bool).reshape(-1)[keep],
        ann_file=ann_file,
    )
