"""Detection metrics: COCO mAP (pycocotools) and Pascal VOC AP (VOC2007 11-point and VOC2010+ area).

Inputs, for every public function:

* ``gt``: a COCO instances dict, or the path of its JSON file. Boxes are ``[x, y, w, h]`` in
  absolute pixels. Annotations may carry an integer ``"difficult"`` (0/1, absent = 0): the VOC AP
  ignores difficult boxes as the VOC devkit does, the COCO AP counts them as ordinary boxes
  (pycocotools does not know the key). ``"iscrowd": 1`` boxes are ignored by both. Category ids
  may be arbitrary (``1..K`` for converted data, COCO's ``1..90`` with gaps) and are reported by
  category name. A missing ``"area"`` is filled with ``w * h``; annotation ids are renumbered
  ``1..M`` because pycocotools mistakes id 0 for "unmatched" and merges duplicate ids.
* ``dets``: a COCO results list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``,
  or the path of its JSON file. Every image and category id must exist in ``gt``.

Outputs are plain ``float``/``int`` values. ``-1.0`` means "undefined" (no ground truth to measure
against), exactly as pycocotools reports it; JSON has no NaN, so we keep that convention. The COCO
numbers keep pycocotools' default of at most 100 detections per image; the VOC AP uses all.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkd.errors import DatasetError

__all__ = [
    "COCO_STAT_KEYS",
    "InputError",
    "MissingInputError",
    "coco_metrics",
    "evaluate_detections",
    "format_metrics_table",
    "voc_ap",
    "voc_metrics",
]


class InputError(DatasetError, ValueError):
    """A ground-truth or detections file that cannot be evaluated (the message names it)."""


class MissingInputError(InputError, FileNotFoundError):
    """A ground-truth or detections file that does not exist."""


COCO_STAT_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip  # the order of COCOeval.stats
_VOC_KEYS = ("voc07_AP50", "voc_AP50")

GtLike = dict[str, Any] | str | os.PathLike[str]
DetsLike = list[dict[str, Any]] | str | os.PathLike[str]


@dataclass(frozen=True)
class _Inputs:
    """Validated copies of the inputs: ``gt`` a COCO dict, ``dets`` a COCO results list."""

    gt: dict[str, Any]
    dets: list[dict[str, Any]]
    names: dict[Any, str]  # category id -> name, in the order of gt["categories"]


# ----------------------------------------------------------------------------- input checking


def _read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; every failure becomes an error naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _finite(value: Any) -> bool:
    # numbers.Real covers numpy scalars too; bool is an int but never a coordinate or a score.
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value: Any) -> bool:
    # COCO ids are integers; pycocotools sorts them, so mixed types would crash deep inside it.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _known(value: Any, valid: dict[Any, Any] | set[Any]) -> bool:
    try:
        return value in valid
    except TypeError:  # unhashable, e.g. a list where an id belongs
        return False


def _check_box(bbox: Any, where: str) -> list[float]:
    """Return ``bbox`` as four floats ``[x, y, w, h]``; ``w, h >= 0`` and all finite."""
    if not isinstance(bbox, list | tuple | np.ndarray) or len(bbox) != 4 or not all(map(_finite, bbox)):
        raise InputError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise InputError(f"{where}: bbox width and height must be >= 0, got {bbox!r}")
    return [x, y, w, h]


def _check_item(item: Any, where: str, image_ids: set[Any], names: dict[Any, str]) -> list[float]:
    """Check the ids and box shared by GT annotations and detections; returns the box."""
    if not isinstance(item, dict):
        raise InputError(f"{where}: must be an object, got {item!r}")
    if not _known(item.get("image_id"), image_ids):
        raise InputError(f"{where}: unknown image_id {item.get('image_id')!r} (not among the GT images)")
    if not _known(item.get("category_id"), names):
        raise InputError(f"{where}: unknown category_id {item.get('category_id')!r} (not among the GT categories)")
    return _check_box(item.get("bbox"), where)


def _check_images_and_categories(gt: Any, src: str) -> tuple[list[dict[str, Any]], dict[Any, str]]:
    """Copies of the GT images and the category id -> name map, both checked."""
    if not isinstance(gt, dict):
        raise InputError(f"{src}: ground truth must be a COCO dict (JSON object), got {type(gt).__name__}")
    for key in ("images", "categories"):
        if not isinstance(gt.get(key), list):
            raise InputError(f"{src}: ground truth needs a {key!r} list")
    images = []
    for i, image in enumerate(gt["images"]):
        if not isinstance(image, dict) or not _is_id(image.get("id")):
            raise InputError(f"{src}: image {i} needs an integer 'id', got {image!r}")
        images.append(dict(image))
    if len({image["id"] for image in images}) != len(images):
        raise InputError(f"{src}: image ids are not unique")
    names: dict[Any, str] = {}
    for i, cat in enumerate(gt["categories"]):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise InputError(f"{src}: category {i} needs an integer 'id' and a string 'name', got {cat!r}")
        if cat["id"] in names or cat["name"] in names.values():
            raise InputError(f"{src}: category {i} repeats id {cat['id']!r} or name {cat['name']!r}")
        names[cat["id"]] = cat["name"]
    return images, names


def _clean_gt(gt: Any, src: str) -> tuple[dict[str, Any], dict[Any, str]]:
    """Validated copy of a COCO ground-truth dict (only the keys the metrics use) and its names."""
    images, names = _check_images_and_categories(gt, src)
    if not isinstance(gt.get("annotations", []), list):
        raise InputError(f"{src}: 'annotations' must be a list")
    image_ids = {image["id"] for image in images}
    annotations = []
    for i, ann in enumerate(gt.get("annotations", [])):
        box = _check_item(ann, f"{src}: annotation {i}", image_ids, names)
        area = ann.get("area", box[2] * box[3])
        if not _finite(area):
            raise InputError(f"{src}: annotation {i}: area must be a finite number, got {area!r}")
        flags = {key: int(bool(ann.get(key, 0))) for key in ("iscrowd", "difficult")}
        ids = {"id": len(annotations) + 1, "image_id": ann["image_id"], "category_id": ann["category_id"]}
        annotations.append(ids | {"bbox": box, "area": float(area)} | flags)
    categories = [{"id": cid, "name": name} for cid, name in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, names


def _clean_dets(dets: Any, src: str, image_ids: set[Any], names: dict[Any, str]) -> list[dict[str, Any]]:
    """Validated copy of a COCO results list (only the keys the metrics use)."""
    if not isinstance(dets, list):
        raise InputError(f"{src}: detections must be a list of objects, got {type(dets).__name__}")
    out = []
    for i, det in enumerate(dets):
        box = _check_item(det, f"{src}: detection {i}", image_ids, names)
        if not _finite(score := det.get("score")):
            raise InputError(f"{src}: detection {i}: score must be a finite number, got {score!r}")
        out.append({"image_id": det["image_id"], "category_id": det["category_id"], "bbox": box, "score": float(score)})
    return out


def _prepare(gt: GtLike, dets: DetsLike) -> _Inputs:
    gt_src, dets_src = "ground truth", "detections"
    if isinstance(gt, str | os.PathLike):
        gt_src, gt = str(gt), _read_json(gt)
    if isinstance(dets, str | os.PathLike):
        dets_src, dets = str(dets), _read_json(dets)
    clean_gt, names = _clean_gt(gt, gt_src)
    image_ids = {image["id"] for image in clean_gt["images"]}
    return _Inputs(clean_gt, _clean_dets(dets, dets_src, image_ids, names), names)


# ----------------------------------------------------------------------------- COCO


def _mean_valid(precision: np.ndarray) -> float:
    """Mean over entries > -1, as COCOeval.summarize does; -1.0 when there are none."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


def _run_cocoeval(inputs: _Inputs) -> COCOeval:
    # pycocotools prints progress on every step; fresh dicts because it writes into the ones it gets.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {**inputs.gt, "annotations": [dict(a) for a in inputs.gt["annotations"]]}
        coco_gt.createIndex()
        if inputs.dets:
            coco_dt = coco_gt.loadRes([dict(d) for d in inputs.dets])
        else:  # loadRes reads anns[0] and crashes on an empty list
            coco_dt = COCO()
            coco_dt.dataset = {**inputs.gt, "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _coco_results(inputs: _Inputs) -> tuple[dict[str, float], dict[Any, dict[str, float]]]:
    """COCO headline stats and per-category-id ``{"AP", "AP50"}``."""
    evaluator = _run_cocoeval(inputs)
    stats = {key: float(value) for key, value in zip(COCO_STAT_KEYS, evaluator.stats, strict=True)}
    params = evaluator.params
    precision = evaluator.eval["precision"]  # [iou thresholds T, recall points R, classes K, areas A, maxDets M]
    t50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
    area_all, max_dets = params.areaRngLbl.index("all"), len(params.maxDets) - 1
    per_class = {}
    for k, cat_id in enumerate(params.catIds):
        p = precision[:, :, k, area_all, max_dets]
        per_class[cat_id] = {"AP": _mean_valid(p), "AP50": _mean_valid(p[t50])}
    return stats, per_class


def coco_metrics(gt: GtLike, dets: DetsLike, iou_type: str = "bbox") -> dict[str, Any]:
    """COCO box metrics via pycocotools' COCOeval.

    Returns the 12 ``COCOeval.stats`` under :data:`COCO_STAT_KEYS` (``AP`` = AP@[.5:.95],
    ``APs/APm/APl`` by area, ``AR1/AR10/AR100`` by max detections) and
    ``per_class = {name: {"AP", "AP50"}}`` (area "all", 100 detections). ``-1.0`` = no ground truth.
    Only ``iou_type="bbox"`` is supported. Raises ``ValueError`` on invalid input.
    """
    if iou_type != "bbox":
        raise ValueError(f"iou_type {iou_type!r} is not supported (only 'bbox')")
    inputs = _prepare(gt, dets)
    stats, per_class = _coco_results(inputs)
    return {**stats, "per_class": {inputs.names[cid]: v for cid, v in per_class.items()}}


# ----------------------------------------------------------------------------- Pascal VOC


def voc_ap(recall: np.ndarray | list[float], precision: np.ndarray | list[float], use_07_metric: bool) -> float:
    """Average precision of one class from its cumulative (recall, precision) points, in rank order.

    ``use_07_metric=True``: VOC2007 11-point interpolation, the mean over ``t = 0, 0.1, ..., 1`` of
    the highest precision at recall ``>= t`` (0 when no point reaches ``t``). ``False``: VOC2010+,
    the area under the monotone (right-to-left running max) precision envelope. NaN precisions
    (0/0 before the first counted detection) count as 0. Empty input gives 0.0.
    """
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.nan_to_num(np.asarray(precision, dtype=np.float64).ravel(), nan=0.0)
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision differ in length: {rec.size} vs {prec.size}")
    if rec.size == 0:
        return 0.0
    if use_07_metric:
        # i / 10, not np.arange(0, 1.1, 0.1): 0.30000000000000004 would miss a recall of exactly 0.3.
        thresholds = np.arange(11) / 10
        best = np.where(rec[None, :] >= thresholds[:, None], prec[None, :], 0.0).max(axis=1)  # 0 if none reached
        return float(best.sum() / 11)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.maximum.accumulate(np.concatenate(([0.0], prec, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[N, M]`` of xyxy boxes ``a [N, 4]`` and ``b [M, 4]`` (continuous, no +1)."""
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _group(keys: np.ndarray) -> dict[int, np.ndarray]:
    """Map each distinct integer key to the indices where it occurs."""
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    return dict(zip(unique.tolist(), np.split(order, starts[1:]), strict=False))


def _match(det: dict[str, np.ndarray], gt: dict[str, np.ndarray], iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """VOC devkit matching of one class: ``(tp, fp)`` boolean ``[D]`` in descending score order.

    ``det``/``gt`` hold ``img`` (int ``[N]``), ``box`` (xyxy ``[N, 4]``), plus ``score`` / ``ignore``.
    """
    order = np.argsort(-det["score"], kind="stable")
    d_img, d_box = det["img"][order], det["box"][order]
    best_iou, best_gt = np.zeros(len(order)), np.full(len(order), -1)
    gt_groups = _group(gt["img"])
    for img, d_idx in _group(d_img).items():
        if (g_idx := gt_groups.get(img)) is None:
            continue
        iou = _box_iou(d_box[d_idx], gt["box"][g_idx])
        j = iou.argmax(axis=1)  # first maximum, as the devkit's strict ">" scan picks
        best_iou[d_idx], best_gt[d_idx] = iou[np.arange(len(d_idx)), j], g_idx[j]
    hit = (best_gt >= 0) & (best_iou >= iou_thr)
    ignored = hit & np.append(gt["ignore"], False)[best_gt]  # index -1 lands on the appended False
    candidates = np.flatnonzero(hit & ~ignored)
    # Detections are in score order, so the first to claim a GT box is the TP, later ones duplicates.
    _, first = np.unique(best_gt[candidates], return_index=True)
    tp = np.zeros(len(order), dtype=bool)
    tp[candidates[first]] = True
    return tp, ~tp & ~ignored


def _arrays(items: list[dict[str, Any]], img_index: dict[Any, int]) -> dict[str, np.ndarray]:
    """Columns of GT boxes or detections: ``img``, ``box`` (xyxy), ``score``, ``ignore`` (difficult/crowd)."""
    box = np.array([it["bbox"] for it in items], dtype=np.float64).reshape(-1, 4)
    box[:, 2:] += box[:, :2]  # xywh -> xyxy
    return {
        "img": np.array([img_index[it["image_id"]] for it in items], dtype=np.int64),
        "box": box,
        "score": np.array([it.get("score", 0.0) for it in items], dtype=np.float64),
        "ignore": np.array([bool(it.get("difficult") or it.get("iscrowd")) for it in items], dtype=bool),
    }


def _voc_results(inputs: _Inputs, iou_thr: float) -> dict[Any, dict[str, float]]:
    """Per-category-id ``{"voc07_AP50", "voc_AP50"}``; -1.0 where no non-difficult GT exists."""
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"iou_thr must be in [0, 1], got {iou_thr}")
    img_index = {image["id"]: i for i, image in enumerate(inputs.gt["images"])}
    by_class: dict[Any, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {cid: ([], []) for cid in inputs.names}
    for ann in inputs.gt["annotations"]:
        by_class[ann["category_id"]][0].append(ann)
    for det in inputs.dets:
        by_class[det["category_id"]][1].append(det)
    results = {}
    for cat_id, (gts, dts) in by_class.items():
        gt, det = _arrays(gts, img_index), _arrays(dts, img_index)
        npos = int((~gt["ignore"]).sum())
        if npos == 0:
            results[cat_id] = dict.fromkeys(_VOC_KEYS, -1.0)
            continue
        tp, fp = _match(det, gt, iou_thr)
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        rec, prec = ctp / npos, ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        results[cat_id] = {"voc07_AP50": voc_ap(rec, prec, True), "voc_AP50": voc_ap(rec, prec, False)}
    return results


def _voc_means(per_class: dict[Any, dict[str, float]]) -> dict[str, float]:
    means = {}
    for key in _VOC_KEYS:
        values = [v[key] for v in per_class.values() if v[key] > -1]
        means[key] = float(np.mean(values)) if values else -1.0
    return means


def voc_metrics(gt: GtLike, dets: DetsLike, iou_thr: float = 0.5) -> dict[str, Any]:
    """Pascal VOC AP at IoU ``iou_thr``, with the VOC devkit's matching rules.

    Returns ``voc07_AP50`` (11-point) and ``voc_AP50`` (area), each the mean over classes with at
    least one non-difficult GT box, ``per_class = {name: {"voc07_AP50", "voc_AP50"}}`` and
    ``iou_thr`` (the keys say "50" whatever the threshold). Difficult and crowd GT boxes are not
    counted as positives, and detections matched to them are neither TP nor FP.
    """
    inputs = _prepare(gt, dets)
    per_class = _voc_results(inputs, iou_thr)
    named = {inputs.names[cid]: v for cid, v in per_class.items()}
    return {**_voc_means(per_class), "iou_thr": float(iou_thr), "per_class": named}


# ----------------------------------------------------------------------------- combined


def evaluate_detections(gt: GtLike, dets: DetsLike) -> dict[str, Any]:
    """COCO and VOC metrics in one flat, JSON-serialisable dict.

    Keys: :data:`COCO_STAT_KEYS`, ``voc07_AP50``, ``voc_AP50``, ``num_images``, ``num_gt`` (all GT
    boxes, difficult and crowd included), ``num_dets`` and ``per_class = {name: {"AP", "AP50",
    "voc07_AP50", "voc_AP50", "num_gt"}}``. Raises ``ValueError`` on invalid input.
    """
    inputs = _prepare(gt, dets)
    stats, coco_per_class = _coco_results(inputs)
    voc_per_class = _voc_results(inputs, 0.5)
    counts = dict.fromkeys(inputs.names, 0)
    for ann in inputs.gt["annotations"]:
        counts[ann["category_id"]] += 1
    per_class = {
        name: {**coco_per_class[cid], **voc_per_class[cid], "num_gt": counts[cid]} for cid, name in inputs.names.items()
    }
    counts_total = {"num_images": len(inputs.gt["images"]), "num_gt": len(inputs.gt["annotations"])}
    return {**stats, **_voc_means(voc_per_class), **counts_total, "num_dets": len(inputs.dets), "per_class": per_class}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if value == -1.0 else f"{value:.4f}"
    return str(value).replace("|", "\\|")  # a "|" in a class name would split the cell


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """Markdown tables of the headline numbers and the per-class rows (``n/a`` = undefined)."""
    headline = [k for k in (*COCO_STAT_KEYS, *_VOC_KEYS, "num_images", "num_gt", "num_dets") if k in metrics]
    lines = ["| metric | value |", "|---|---:|", *(f"| {k} | {_cell(metrics[k])} |" for k in headline)]
    per_class: dict[str, dict[str, Any]] = metrics.get("per_class") or {}
    if per_class:
        columns = [c for c in ("AP", "AP50", *_VOC_KEYS, "num_gt") if any(c in row for row in per_class.values())]
        lines += ["", "| class | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for name, row in per_class.items():
            lines.append(f"| {_cell(name)} | " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)
