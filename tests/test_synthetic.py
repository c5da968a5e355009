"""Tests of the built-in synthetic detection dataset (detkd.data.synthetic) and tools/make_dataset.py."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def rendered() -> list:
    """Thirty images at 128 px, rendered in memory (no files), for statistics."""
    return [render_image(3, 0, i, 128) for i in range(30)]


def test_same_seed_is_byte_identical_across_worker_counts(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_synthetic(again, SEED, COUNTS, size=SIZE, workers=2, progress=False)
    first, second = _files(dataset), _files(again)
    assert sorted(first) == sorted(second)
    assert all(first[name] == second[name] for name in first)
    assert any(name.endswith(".jpg") for name in first) and "annotations/instances_train.json" in first


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_synthetic(other, SEED + 1, {"train": 2}, size=SIZE, workers=1, progress=False)
    for name in ("JPEGImages/train_000000.jpg", "JPEGImages/train_000001.jpg"):
        assert (other / name).read_bytes() != (dataset / name).read_bytes()
    ours = json.loads((dataset / "annotations/instances_train.json").read_text())
    theirs = json.loads((other / "annotations/instances_train.json").read_text())
    assert theirs["annotations"] != [a for a in ours["annotations"] if a["image_id"] <= 2]


def test_layout(dataset: Path) -> None:
    assert (dataset / "classes.txt").read_text().splitlines() == list(CLASSES)
    assert sorted(p.name for p in (dataset / "unlabeled").iterdir()) == ["unlabeled_000000.jpg", "unlabeled_000001.jpg"]
    assert len(list((dataset / "JPEGImages").glob("*.jpg"))) == COUNTS["train"] + COUNTS["val"]
    assert len(list((dataset / "Annotations").glob("*.xml"))) == COUNTS["train"] + COUNTS["val"]
    # A split with no images still gets its (empty) split file and JSON.
    assert (dataset / "ImageSets/Main/test.txt").read_text() == ""
    empty = json.loads((dataset / "annotations/instances_test.json").read_text())
    assert empty["images"] == [] and empty["annotations"] == [] and len(empty["categories"]) == len(CLASSES)


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_json_is_valid(dataset: Path, split: str) -> None:
    coco = COCO(str(dataset / "annotations" / f"instances_{split}.json"))
    images = [coco.imgs[i] for i in sorted(coco.imgs)]
    assert [img["id"] for img in images] == list(range(1, COUNTS[split] + 1))
    assert [img["file_name"] for img in images] == [f"{split}_{i:06d}.jpg" for i in range(COUNTS[split])]
    cats = coco.loadCats(coco.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(i + 1, name) for i, name in enumerate(CLASSES)]
    for img in images:
        pixels = cv2.imread(str(dataset / "JPEGImages" / img["file_name"]))
        assert pixels.shape == (img["height"], img["width"], 3)
        assert 0.75 * SIZE - 1 <= img["width"] <= 1.25 * SIZE + 1
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img["width"] and y + h <= img["height"]
    split_ids = (dataset / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    assert split_ids == [Path(img["file_name"]).stem for img in images]


def test_content_is_worth_learning(rendered: list) -> None:
    assert len(CLASSES) >= 6 and list(CLASSES) == sorted(CLASSES)
    labels = np.concatenate([r.labels for r in rendered])
    assert set(labels.tolist()) == set(range(len(CLASSES)))
    assert len(labels) / len(rendered) > 2.0
    assert max(len(r.labels) for r in rendered) >= 6  # some crowded images
    rel_area = np.concatenate(
        [(r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]) / (r.width * r.height) for r in rendered]
    )
    assert rel_area.min() < 0.01 and rel_area.max() > 0.15  # small and large objects
    assert np.concatenate([r.difficult for r in rendered]).any()
    visible = np.concatenate([r.visible_fraction for r in rendered])
    assert (visible < 0.9).sum() >= 3  # occlusion (and truncation) happens
    assert visible.min() >= MIN_VISIBLE - 1e-6
    assert len({(r.width, r.height) for r in rendered}) > 10  # sizes vary, for letterboxing


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
    assert "train 2 images" in done.stdout and "circle" in done.stdout
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
    "bad", [["--train", "-1"], ["--size", "16"], ["--workers", "0"], ["--val", "x"], ["--seed", "-3"]]
)
def test_tool_rejects_bad_args(tmp_path: Path, bad: list[str]) -> None:
    tool = _load_tool()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["synthetic", "--out", str(tmp_path / "x"), *bad])
    assert exit_info.value.code == 2
    assert not (tmp_path / "x").exists()
