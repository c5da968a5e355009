"""k-means anchors: cluster recovery, determinism, errors, and the dataset helper."""

from __future__ import annotations

import numpy as np
import pytest

from detkd.data.records import DatasetIndex
from detkd.models.anchors import anchors_from_dataset, kmeans_anchors, mean_best_iou

CENTERS = np.array([[10.0, 12.0], [40.0, 30.0], [100.0, 120.0]])


def _clustered_sizes(seed: int = 0, per_cluster: int = 100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.95, 1.05, size=(len(CENTERS), per_cluster, 2))
    return (CENTERS[:, None, :] * noise).reshape(-1, 2)


def test_kmeans_recovers_separated_clusters() -> None:
    wh = _clustered_sizes()
    anchors = kmeans_anchors(wh, k=3, seed=0)
    assert anchors.shape == (3, 2)
    np.testing.assert_allclose(anchors, CENTERS, rtol=0.03)
    assert mean_best_iou(wh, anchors) > 0.85
    assert mean_best_iou(wh, anchors) > mean_best_iou(wh, anchors[:1])


def test_kmeans_sorted_by_area_and_deterministic_per_seed() -> None:
    rng = np.random.default_rng(1)
    wh = rng.uniform(5, 200, size=(500, 2))
    first = kmeans_anchors(wh, k=5, seed=3)
    np.testing.assert_array_equal(first, kmeans_anchors(wh, k=5, seed=3))
    areas = first.prod(axis=1)
    assert np.all(np.diff(areas) >= 0)


def test_kmeans_too_few_boxes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least k=5 boxes, got 3"):
        kmeans_anchors(CENTERS, k=5)


def test_kmeans_handles_duplicate_sizes() -> None:
    wh = np.repeat(CENTERS, [50, 3, 20], axis=0)
    np.testing.assert_allclose(kmeans_anchors(wh, k=3, seed=0), CENTERS)
    with pytest.raises(ValueError, match="only 3 distinct box sizes"):
        kmeans_anchors(wh, k=4)


def test_kmeans_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        kmeans_anchors(np.ones((4, 3)), k=2)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchors(np.array([[1.0, 0.0], [2.0, 2.0]]), k=1)


def test_anchors_from_dataset_letterbox_scales_and_skips_difficult(fixture_index: DatasetIndex) -> None:
    # img_a 64x48: box 28x37 at scale 1 (its 50x10 box is difficult); img_b 50x70: 50x70 at 64/70
    anchors = anchors_from_dataset(fixture_index, imgsz=64, k=2)
    assert anchors == [[28.0, 37.0], [45.71, 64.0]]
    with pytest.raises(ValueError, match="at least k=3 boxes"):
        anchors_from_dataset(fixture_index, imgsz=64, k=3)
