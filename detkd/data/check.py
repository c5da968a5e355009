"""Dataset check: counts, class histogram, image sizes and every defect by file.

It reads the dataset with the same readers that training uses, with full image decoding, so what
the check reports is exactly what training will skip, clip or drop. It never raises on bad data:
a file that makes the whole dataset unreadable (malformed JSON, no such folder) becomes the
report's ``fatal`` message.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detkd.data.layouts import Layout, discover
from detkd.data.records import DatasetError, DatasetIndex, Defect
from detkd.data.sources import detect_format, read_index, read_split

__all__ = ["CheckReport", "check_dataset", "check_layout", "summarize_splits"]


@dataclass
class CheckReport:
    """What :func:`check_dataset` found; ``to_dict`` is the ``--json`` output."""

    source: str
    format: str
    split: str | None
    images_listed: int = 0
    images_usable: int = 0
    boxes_annotated: int = 0
    boxes_kept: int = 0
    class_histogram: dict[str, int] = field(default_factory=dict)
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count, most common first
    defects: list[Defect] = field(default_factory=list)
    fatal: str | None = None

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.defects

    def defect_counts(self) -> dict[str, int]:
        return dict(Counter(d.kind.value for d in self.defects))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "split": self.split,
            "images_listed": self.images_listed,
            "images_usable": self.images_usable,
            "boxes_annotated": self.boxes_annotated,
            "boxes_kept": self.boxes_kept,
            "class_histogram": self.class_histogram,
            "image_sizes": self.image_sizes,
            "defect_counts": self.defect_counts(),
            "defects": [d.to_dict() for d in self.defects],
            "fatal": self.fatal,
        }

    def to_text(self, max_defects: int = 200) -> str:
        """Human-readable report; at most ``max_defects`` defect lines (all are in the JSON)."""
        lines = [f"dataset: {self.source} (format {self.format}, split {self.split or 'all'})"]
        if self.fatal:
            return "\n".join([*lines, f"FATAL: {self.fatal}"])
        lines += [
            f"images: {self.images_usable} usable of {self.images_listed} listed",
            f"boxes:  {self.boxes_kept} kept of {self.boxes_annotated} annotated",
            "classes: " + ", ".join(f"{k}={v}" for k, v in self.class_histogram.items()),
            "image sizes: " + ", ".join(f"{k} ({v})" for k, v in list(self.image_sizes.items())[:8])
            + (" ..." if len(self.image_sizes) > 8 else ""),
        ]
        if not self.defects:
            return "\n".join([*lines, "defects: none"])
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.defect_counts().items()))
        lines.append(f"defects: {len(self.defects)} ({counts})")
        lines += [f"  {d}" for d in self.defects[:max_defects]]
        if len(self.defects) > max_defects:
            lines.append(f"  ... {len(self.defects) - max_defects} more (see --json)")
        return "\n".join(lines)


def _fill(report: CheckReport, index: DatasetIndex) -> None:
    report.images_listed = index.num_listed
    report.images_usable = len(index.records)
    report.boxes_annotated = index.num_annotated_boxes
    report.boxes_kept = index.num_boxes
    report.class_histogram = index.class_histogram()
    sizes = Counter(f"{r.width}x{r.height}" for r in index.records)
    report.image_sizes = dict(sizes.most_common())
    report.defects = list(index.defects)


def check_dataset(
    path: str | Path,
    fmt: str | None = None,
    split: str | None = None,
    img_dir: str | Path | None = None,
    class_names: list[str] | None = None,
    decode: bool = True,
    progress: bool = False,
) -> CheckReport:
    """Check a dataset of any format (see :func:`detkd.data.sources.read_index` for the arguments).

    Args:
        decode: decode every image (finds truncated files); False reads headers only.
    """
    report = CheckReport(source=str(path), format=fmt or "?", split=split)
    try:
        report.format = fmt or detect_format(path)
        index = read_index(path, report.format, split, class_names, img_dir, "full" if decode else "header", progress)
    except (DatasetError, OSError) as exc:  # unusable as a whole: say so, never a traceback
        report.fatal = str(exc)
        return report
    _fill(report, index)
    return report


def check_layout(path: str | Path, decode: bool = True) -> tuple[Layout, list[CheckReport]]:
    """Find the dataset's layout (:func:`detkd.data.layouts.discover`) and check every split it has.

    Raises:
        DatasetError: no layout (the path is not a dataset detkd reads).
    """
    layout = discover(path)
    data = layout.data_config(holdout=0.0)
    reports = []
    for split in layout.splits:
        report = CheckReport(source=layout.found.get(split, str(layout.root)), format=layout.format, split=split)
        try:
            _fill(report, read_split(data, split, "full" if decode else "header"))
        except (DatasetError, OSError) as exc:
            report.fatal = str(exc)
        reports.append(report)
    return layout, reports


def summarize_splits(indexes: dict[str, DatasetIndex], held_out: float = 0.0) -> list[str]:
    """What a training run reads, in a few lines: per split the images and boxes kept, and the
    defects by kind (images skipped, boxes dropped or clipped); printed once at the start of every run."""
    lines = []
    for split, index in indexes.items():
        note = f" (held out: {held_out:.0%} of train, seed 0)" if split == "val" and held_out > 0 else ""
        lines.append(f"[data] {split}: {len(index.records)} of {index.num_listed} images, {index.num_boxes} boxes{note} "
                     f"from {index.source}")
        by_action: dict[str, Counter[str]] = {}
        for defect in index.defects:
            by_action.setdefault(defect.action, Counter())[defect.kind.value] += 1
        for action, kinds in sorted(by_action.items()):
            listed = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
            lines.append(f"[data]   {sum(kinds.values())} {action} ({listed})")
    first = next(iter(indexes.values()), None)
    if first is not None:
        lines.append(f"[data] {len(first.class_names)} classes: {', '.join(first.class_names)}")
    return lines
