"""Tests of the built-in synthetic detection dataset (detkd.data.synthetic) and tools/make_dataset.py."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from detkd.data.synthetic import (
    CLASSES,
    DIFFICULT_SIDE,
    DIFFICULT_VISIBLE,
    MIN_VISIBLE,
    PRESETS,
    generate_synthetic,
    perturb_detections,
    render_image,
)

REPO = Path(__file__).resolve().parents[1]
SEED = 7
SIZE = 96
COUNTS = {"train": 10, "val": 3, "test": 0, "unlabeled": 2}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "ds"
    generate_synthetic(out, SEED, COUNTS, size=SIZE, workers=1, progress=False)
    return out


@pytest.fixture(scope="module", params=sorted(PRESETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list]:
    """Thirty images at 128 px of each preset, rendered in memory (no files), for statistics."""
    return request.param, [render_image(3, 0, i, 128, request.param) for i in range(30)]


def _relative_sides(images: list) -> np.ndarray:
    """Each box's longer side over its image's shorter side."""
    return np.concatenate([np.maximum(r.boxes[:, 2] - r.boxes[:, 0], r.boxes[:, 3] - r.boxes[:, 1]) / min(r.width, r.height)
                           for r in images])


def test_content_is_worth_learning(rendered: tuple[str, list]) -> None:
    preset, images = rendered
    classes = PRESETS[preset].classes
    assert len(classes) >= 5 and list(classes) == sorted(classes) and set(classes) <= set(CLASSES)
    if preset == "hard":
        assert classes == CLASSES  # the whole shape vocabulary
    labels = np.concatenate([r.labels for r in images])
    assert set(labels.tolist()) == set(range(len(classes)))
    visible = np.concatenate([r.visible_fraction for r in images])
    assert (visible < 0.9).sum() >= 3  # occlusion (and truncation) happens
    assert visible.min() >= MIN_VISIBLE - 1e-6
    assert len({(r.width, r.height) for r in images}) > 10  # sizes vary, for letterboxing
    sides = _relative_sides(images)
    if preset == "hard":
        assert len(labels) / len(images) > 2.0
        assert max(len(r.labels) for r in images) >= 6  # some crowded images
        rel_area = np.concatenate(
            [(r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]) / (r.width * r.height) for r in images]
        )
        assert rel_area.min() < 0.01 and rel_area.max() > 0.15  # small and large objects
        assert np.concatenate([r.difficult for r in images]).any()
    else:  # standard: a few objects per image, each at least about a quarter of the short side
        counts = [len(r.labels) for r in images]
        assert min(counts) >= 1 and max(counts) <= 4 and 2.0 <= np.mean(counts) <= 4.0
        whole = visible > 0.9  # an unoccluded object shows its drawn size
        assert sides[whole].min() >= 0.22 and sides.max() <= 0.9
        assert np.percentile(sides, 90) / np.percentile(sides, 10) >= 1.8  # scale still varies
        assert np.concatenate([r.difficult for r in images]).mean() < 0.1


def test_standard_objects_fit_a_stride_32_grid_at_the_demo_size(rendered: tuple[str, list]) -> None:
    """At a 160 px input (the demo's) most objects span a stride-32 cell; in ``hard`` most do not."""
    preset, images = rendered
    at_160 = np.concatenate([_relative_sides([r]) * min(r.width, r.height) * 160 / max(r.width, r.height) for r in images])
    share = float((at_160 >= 24).mean())
    assert share >= 0.85 if preset == "standard" else share <= 0.5


@pytest.mark.parametrize(("preset", "digest"), [("standard", "26c250f52abc38be"), ("hard", "b7671452dbf70be6")])
def test_preset_golden(preset: str, digest: str) -> None:
    """Pixels, boxes and labels of one image per preset never change unnoticed (``hard``'s digest is
    the one the generator gave before presets existed)."""
    r = render_image(5, 0, 3, 128, preset)
    assert hashlib.sha256(r.image.tobytes() + r.boxes.tobytes() + r.labels.tobytes()).hexdigest()[:16] == digest


def test_unknown_preset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown synthetic preset 'easy'; known: standard, hard"):
        generate_synthetic(tmp_path / "x", 0, {"train": 1}, progress=False, preset="easy")
    assert not (tmp_path / "x").exists()


def test_boxes_are_the_visible_extent(dataset: Path) -> None:
    coco = json.loads((dataset / "annotations/instances_train.json").read_text())
    for index in range(COUNTS["train"]):
        r = render_image(SEED, 0, index, SIZE)
        anns = [a for a in coco["annotations"] if a["image_id"] == index + 1]
        assert len(anns) == len(r.labels)
        for k, ann in enumerate(anns):
            ys, xs = np.nonzero(r.instance_map == k + 1)
            extent = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert ann["bbox"] == pytest.approx(extent)
            assert ann["category_id"] == r.labels[k] + 1
            fraction = len(xs) / (len(xs) / r.visible_fraction[k])
            short = min(extent[2], extent[3])
            expected = fraction < DIFFICULT_VISIBLE or short < DIFFICULT_SIDE
            assert bool(ann["difficult"]) == expected == bool(r.difficult[k])


def test_perturb_detections(dataset: Path) -> None:
    gt = json.loads((dataset / "annotations/instances_train.json").read_text())
    dets = perturb_detections(gt, seed=1, fp_per_image=1.0)
    assert dets == perturb_detections(gt, seed=1, fp_per_image=1.0)
    assert dets != perturb_detections(gt, seed=2, fp_per_image=1.0)
    sizes = {img["id"]: (img["width"], img["height"]) for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for det in dets:
        assert set(det) == {"image_id", "category_id", "bbox", "score"}
        width, height = sizes[det["image_id"]]
        x, y, w, h = det["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= width + 1e-6 and y + h <= height + 1e-6
        assert 0 < det["score"] <= 1 and det["category_id"] in cat_ids
    assert len(perturb_detections(gt, seed=1, miss_rate=1.0, fp_per_image=0.0)) == 0
    exact = perturb_detections(gt, seed=1, jitter=0.0, miss_rate=0.0, fp_per_image=0.0, confusion_rate=0.0)
    got, want = np.array([d["bbox"] for d in exact]), np.array([a["bbox"] for a in gt["annotations"]])
    assert got.shape == want.shape and np.allclose(got, want, atol=0.01)


def test_tool_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "tool"
    cmd = [sys.executable, str(REPO / "tools/make_dataset.py"), "synthetic", "--out", str(out), "--seed", "3"]
    cmd += ["--train", "2", "--val", "1", "--test", "1", "--unlabeled", "1", "--size", "64", "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "train 2 images" in done.stdout and "circle" in done.stdout and "standard preset" in done.stdout
    for name in ("train_000001.jpg", "val_000000.jpg", "test_000000.jpg"):
        assert (out / "JPEGImages" / name).is_file()
        assert (out / "Annotations" / name.replace(".jpg", ".xml")).is_file()
    for split in ("train", "val", "test"):
        assert (out / "ImageSets/Main" / f"{split}.txt").is_file()
        assert (out / "annotations" / f"instances_{split}.json").is_file()
    assert (out / "unlabeled/unlabeled_000000.jpg").is_file() and (out / "classes.txt").is_file()


@pytest.mark.parametrize(
    ("counts", "kwargs"),
    [({"train": -1}, {}), ({"training": 1}, {}), ({"train": 1}, {"size": 31}), ({"train": 1}, {"workers": 0})],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, counts: dict[str, int], kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate_synthetic(tmp_path / "x", 0, counts, progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_dataset", REPO / "tools/make_dataset.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "bad", [["--train", "-1"], ["--size", "16"], ["--workers", "0"], ["--val", "x"], ["--seed", "-3"], ["--preset", "easy"]]
)
def test_tool_rejects_bad_args(tmp_path: Path, bad: list[str]) -> None:
    tool = _load_tool()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["synthetic", "--out", str(tmp_path / "x"), *bad])
    assert exit_info.value.code == 2
    assert not (tmp_path / "x").exists()
