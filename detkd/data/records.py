"""Format-independent annotation records and the defects found while reading them.

Every reader (VOC, COCO, YOLO-txt, image folder) turns its files into a :class:`DatasetIndex`:
one :class:`ImageRecord` per usable image plus the :class:`Defect` list of everything that was
wrong. Datasets, converters and ``tools/check_dataset.py`` all work from that index, so a defect
is detected once, by one piece of code, whichever tool meets it.

Box convention: ``xyxy`` in absolute pixels, float32, continuous coordinates where ``(0, 0)`` is
the top-left corner of the image and ``(W, H)`` the bottom-right one, so box width is
``x2 - x1`` (the convention of torchvision, pycocotools and ultralytics).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detkd.errors import DatasetError

__all__ = [
    "DatasetError",
    "Defect",
    "DefectKind",
    "DatasetIndex",
    "ImageRecord",
    "sanitize_boxes",
]


class DefectKind(str, enum.Enum):
    """Kinds of problems found in a dataset; the value is the name shown to users."""

    UNREADABLE_IMAGE = "unreadable_image"
    TRUNCATED_IMAGE = "truncated_image"
    MISSING_IMAGE = "missing_image"
    MISSING_ANNOTATION = "missing_annotation"
    MALFORMED_ANNOTATION = "malformed_annotation"
    SIZE_MISMATCH = "size_mismatch"
    BOX_OUTSIDE_IMAGE = "box_outside_image"
    ZERO_AREA_BOX = "zero_area_box"
    INVALID_BOX = "invalid_box"
    UNKNOWN_CLASS = "unknown_class"
    EMPTY_ANNOTATION = "empty_annotation"
    UNUSED_CATEGORY = "unused_category"


@dataclass(frozen=True)
class Defect:
    """One problem in one file, and what detkd did about it.

    Attributes:
        file: the file at fault (annotation or image), as a string path.
        kind: what is wrong.
        detail: a sentence for humans (which box, which value).
        action: ``"clipped"``, ``"dropped box"``, ``"skipped image"`` or ``"kept"``.
    """

    file: str
    kind: DefectKind
    detail: str
    action: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind.value, "detail": self.detail, "action": self.action}

    def __str__(self) -> str:
        return f"{self.file}: {self.kind.value}: {self.detail} ({self.action})"


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


def _empty_labels() -> np.ndarray:
    return np.zeros((0,), dtype=np.int64)


def _empty_flags() -> np.ndarray:
    return np.zeros((0,), dtype=bool)


@dataclass
class ImageRecord:
    """Annotations of one image, already validated.

    Attributes:
        image_id: id used in COCO JSON and detections (1..N in split order unless the source
            format has its own ids, as COCO does).
        path: the image file.
        width, height: image size in pixels (from the image header when it was read).
        boxes: Float32[N, 4] xyxy absolute pixels, inside the image, positive area.
        labels: Int64[N] in ``0..K-1``, indices into the index's ``class_names``.
        difficult: Bool[N], the VOC ``difficult`` flag (False for formats without it).
        ann_file: the annotation file the boxes came from (None for unlabeled images).
        labeled: False for images that carry no annotation at all (unlabeled folders).
    """

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_empty_boxes)
    labels: np.ndarray = field(default_factory=_empty_labels)
    difficult: np.ndarray = field(default_factory=_empty_flags)
    ann_file: Path | None = None
    labeled: bool = True

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def not_difficult(self) -> np.ndarray:
        """Bool[N]: the boxes that count in evaluation (not ``difficult``); all of them when the record
        carries no flag per box."""
        flags = np.asarray(self.difficult, dtype=bool).reshape(-1)
        return ~flags if flags.size == self.num_boxes else np.ones(self.num_boxes, bool)


@dataclass
class DatasetIndex:
    """All records of one split of one dataset, the class list and the defects found.

    Attributes:
        records: usable images, in split order.
        class_names: class names, index = label.
        defects: every problem found while reading, in file order.
        source: what was read (a folder or a file), for messages.
        num_annotated_boxes: boxes present in the annotation files before any was dropped.
        category_ids: for COCO sources, the original category id of each label (else 1..K).
        num_listed: images the source lists (split file entries, JSON images, files found),
            usable or not.
        image_root: folder that image paths are relative to (``file_name`` in COCO output).
    """

    records: list[ImageRecord]
    class_names: list[str]
    defects: list[Defect]
    source: str
    num_annotated_boxes: int = 0
    category_ids: list[int] | None = None
    num_listed: int = 0
    image_root: Path | None = None

    def __post_init__(self) -> None:
        if self.category_ids is None:
            self.category_ids = list(range(1, len(self.class_names) + 1))

    @property
    def num_boxes(self) -> int:
        """Boxes kept after validation."""
        return sum(r.num_boxes for r in self.records)

    def class_histogram(self) -> dict[str, int]:
        """Kept boxes per class name, every class listed (zero counts included)."""
        counts: Counter[int] = Counter()
        for record in self.records:
            counts.update(record.labels.tolist())
        return {name: counts.get(i, 0) for i, name in enumerate(self.class_names)}

    def defect_counts(self) -> dict[str, int]:
        return dict(Counter(d.kind.value for d in self.defects))

    def require_usable(self) -> None:
        """Raise :class:`DatasetError` when no image is usable (the run cannot do anything)."""
        if not self.records:
            kinds = ", ".join(f"{k}: {n}" for k, n in self.defect_counts().items()) or "no images found"
            raise DatasetError(f"{self.source}: no usable images ({kinds})")


def sanitize_boxes(
    boxes: np.ndarray, width: int, height: int, file: str, names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[Defect]]:
    """Validate boxes against their image: clip the ones outside, drop invalid and zero-area ones.

    Args:
        boxes: Float[N, 4] xyxy absolute pixels as annotated.
        width, height: the image size.
        file: the annotation file, named in the defects.
        names: how each box is called in messages (e.g. ``"object 3 (dog)"``); default ``"box i"``.

    Returns:
        ``(clipped boxes Float32[M, 4], keep Bool[N], defects)``: ``keep`` marks which input boxes
        survive, so callers can filter their labels and flags the same way.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    defects: list[Defect] = []
    keep = np.ones(len(boxes), dtype=bool)
    for i, box in enumerate(boxes):
        text = (names[i] if names is not None else f"box {i}") + " [" + ", ".join(f"{v:g}" for v in box) + "]"
        if not np.all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
            defects.append(Defect(file, DefectKind.INVALID_BOX, f"{text} is not x1<=x2, y1<=y2", "dropped box"))
            keep[i] = False
            continue
        clipped = np.clip(box, 0.0, [width, height, width, height])
        if (clipped[2] - clipped[0]) <= 0 or (clipped[3] - clipped[1]) <= 0:
            where = "zero area" if (box[2] - box[0]) * (box[3] - box[1]) == 0 else "no area inside the image"
            defects.append(Defect(file, DefectKind.ZERO_AREA_BOX, f"{text} has {where}", "dropped box"))
            keep[i] = False
            continue
        if not np.array_equal(clipped, box):
            defects.append(
                Defect(file, DefectKind.BOX_OUTSIDE_IMAGE, f"{text} exceeds image {width}x{height}", "clipped")
            )
            boxes[i] = clipped
    return boxes[keep].astype(np.float32), keep, defects
