"""Anchor shapes from data: k-means on box sizes with the 1 - IoU distance (YOLOv2, section 2).

Sizes are ``(width, height)`` in input pixels. The IoU of two sizes places both boxes at a common
corner, so only shape and scale matter, not position; unlike a Euclidean distance it does not let
large boxes dominate the clustering.
"""

from __future__ import annotations

import numpy as np

from detkd.data.records import DatasetIndex

__all__ = ["anchors_from_dataset", "kmeans_anchors", "mean_best_iou"]


def _wh_iou(wh: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Corner-aligned IoU: ``wh`` [N, 2], ``centers`` [K, 2] -> [N, K]."""
    inter = np.minimum(wh[:, None, :], centers[None, :, :]).prod(axis=2)
    return inter / (wh.prod(axis=1)[:, None] + centers.prod(axis=1)[None, :] - inter)


def _check_wh(wh: np.ndarray) -> np.ndarray:
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"box sizes must be an (N, 2) array of (width, height), got shape {wh.shape}")
    if not np.all(np.isfinite(wh)) or np.any(wh <= 0):
        raise ValueError("box sizes must be finite and positive")
    return wh


def _init_plus_plus(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with d = 1 - IoU: each new center is drawn with probability ~ d^2.

    A point identical to a chosen center has d = 0, so duplicates are never picked twice; the
    caller guarantees at least k distinct sizes, so the probabilities never all vanish.
    """
    centers = [wh[rng.integers(len(wh))]]
    dist = 1.0 - _wh_iou(wh, np.asarray(centers))[:, 0]
    for _ in range(1, k):
        weights = np.clip(dist, 0.0, None) ** 2
        new = wh[rng.choice(len(wh), p=weights / weights.sum())]
        centers.append(new)
        dist = np.minimum(dist, 1.0 - _wh_iou(wh, new[None])[:, 0])
    return np.asarray(centers)


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iters: int = 300) -> np.ndarray:
    """Cluster box sizes into ``k`` anchors.

    Args:
        wh: Float[N, 2] box (width, height) in pixels, all positive.
        k: number of anchors.
        seed: seeds the k-means++ initialisation; the result is deterministic per seed.
        iters: maximum Lloyd iterations (stops earlier when assignments no longer change).

    Returns:
        Float[k, 2] anchors (width, height) in pixels, sorted by area (smallest first).

    Raises:
        ValueError: fewer than ``k`` boxes, or fewer than ``k`` distinct sizes (k distinct anchors
        cannot be placed; use a smaller k).
    """
    wh = _check_wh(wh)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(wh) < k:
        raise ValueError(f"k-means needs at least k={k} boxes, got {len(wh)}")
    distinct = len(np.unique(wh, axis=0))
    if distinct < k:
        raise ValueError(f"only {distinct} distinct box sizes among {len(wh)} boxes: cannot place k={k} anchors; use k <= {distinct}")
    rng = np.random.default_rng(seed)
    centers = _init_plus_plus(wh, k, rng)
    assign = np.full(len(wh), -1)
    for _ in range(iters):
        iou = _wh_iou(wh, centers)
        new_assign = iou.argmax(axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        centers = _update_centers(wh, assign, iou, centers)
    return centers[np.argsort(centers.prod(axis=1), kind="stable")]


def _update_centers(wh: np.ndarray, assign: np.ndarray, iou: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Mean size per cluster; an empty cluster takes the point worst served by its own center."""
    new = centers.copy()
    own_dist = 1.0 - iou[np.arange(len(wh)), assign]
    for j in range(len(centers)):
        members = assign == j
        if members.any():
            new[j] = wh[members].mean(axis=0)
        else:
            worst = int(own_dist.argmax())
            new[j] = wh[worst]
            own_dist[worst] = 0.0  # a second empty cluster takes the next-worst point
    return new


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Average over boxes of the best corner-aligned IoU with any anchor (YOLOv2's "Avg IOU")."""
    wh = _check_wh(wh)
    return float(_wh_iou(wh, _check_wh(anchors)).max(axis=1).mean())


def anchors_from_dataset(index: DatasetIndex, imgsz: int, k: int, seed: int = 0) -> list[list[float]]:
    """Anchors (pixels at ``imgsz``) for a dataset, as JSON-friendly ``[[w, h], ...]`` sorted by area.

    Each record's boxes are scaled like the letterbox transform does (``imgsz / max(width, height)``
    of the record's image); difficult boxes are ignored. Values are rounded to 0.01 px.
    """
    sizes = []
    for record in index.records:
        keep = ~np.asarray(record.difficult, dtype=bool)
        if not keep.any():
            continue
        boxes = np.asarray(record.boxes, dtype=np.float64)[keep]
        scale = imgsz / max(record.width, record.height)
        sizes.append((boxes[:, 2:] - boxes[:, :2]) * scale)
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    anchors = kmeans_anchors(wh, k, seed=seed)
    return [[round(float(w), 2), round(float(h), 2)] for w, h in anchors]
