"""Shared fixtures: a tiny detection dataset built in code and written as real files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Keep the suite out of the user's cache (ultralytics writes its settings there): set before
# detkd is imported, since importing it fixes YOLO_CONFIG_DIR.
os.environ.setdefault("DETKD_CACHE", tempfile.mkdtemp(prefix="detkd-test-cache-"))
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: the tools they start get one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
from PIL import Image

from detkd.data.records import DatasetIndex, ImageRecord

CLASSES = ["cat", "dog", "person"]
SHARED_BCCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"


def write_image(path: Path, width: int, height: int, seed: int = 0, fmt: str | None = None) -> Path:
    """A random RGB image file (JPEG unless the suffix says otherwise)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def make_index(image_dir: Path) -> DatasetIndex:
    """Three images (one without objects), integer boxes, one difficult box."""
    specs = [
        ("img_a.jpg", 64, 48, [[2, 3, 30, 40], [10, 10, 60, 20]], [0, 2], [False, True]),
        ("img_b.jpg", 50, 70, [[0, 0, 50, 70]], [1], [False]),
        ("img_c.jpg", 40, 40, [], [], []),
    ]
    records = []
    for i, (name, w, h, boxes, labels, difficult) in enumerate(specs, start=1):
        records.append(
            ImageRecord(
                image_id=i,
                path=write_image(image_dir / name, w, h, seed=i),
                width=w,
                height=h,
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                labels=np.asarray(labels, dtype=np.int64),
                difficult=np.asarray(difficult, dtype=bool),
            )
        )
    return DatasetIndex(records, list(CLASSES), [], str(image_dir), image_root=image_dir)


@pytest.fixture
def fixture_index(tmp_path: Path) -> DatasetIndex:
    return make_index(tmp_path / "src_images")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest single-threaded; on a busy 2-core machine extra threads only contend."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
