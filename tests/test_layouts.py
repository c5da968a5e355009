"""Datasets as users bring them: Roboflow YOLO and COCO exports, labelImg folders, CVAT COCO, each
written in its real form to tmp_path; exact counts, the phantom class gone, the seeded hold-out,
and a one-epoch training through ``--data`` on each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detkd.data.check import check_layout
from detkd.data.layouts import discover
from detkd.data.records import DatasetError
from detkd.data.sources import holdout, read_split
from tests.conftest import write_image

REPO = Path(__file__).resolve().parents[1]
NAMES = ["RBC", "WBC"]
# per split: (stem, extension, boxes as (class, x1, y1, x2, y2) in a 64x48 image)
SPLITS = {
    "train": [("a1", ".jpg", [(0, 4, 4, 30, 30), (1, 30, 10, 60, 40)]), ("a2", ".JPG", [(0, 10, 5, 40, 35)]),
              ("a3", ".png", [(1, 2, 2, 20, 20), (0, 25, 20, 50, 45)]), ("a4", ".jpeg", [(0, 5, 5, 25, 25)])],
    "valid": [("b1", ".jpg", [(1, 8, 8, 40, 40)]), ("b2", ".JPG", [(0, 1, 1, 33, 22)])],
    "test": [("c1", ".jpg", [(0, 3, 3, 30, 30)])],
}
W, H = 64, 48


def _voc_xml(stem: str, ext: str, boxes: list) -> str:
    objects = "".join(f"<object><name>{NAMES[c]}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                      f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for c, x1, y1, x2, y2 in boxes)
    return (f"<annotation><folder>x</folder><filename>{stem}{ext}</filename><path>C:\\Users\\me\\{stem}{ext}</path>"
            f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>{objects}</annotation>")


def _image(path: Path, seed: int) -> None:
    write_image(path, W, H, seed=seed, fmt="PNG" if path.suffix.lower() == ".png" else "JPEG")


def make_labelimg(root: Path, splits: tuple[str, ...] = ("train", "valid", "test")) -> Path:
    """labelImg: XML beside each image, split folders, mixed-case extensions, no ImageSets; one image without XML."""
    for split in splits:
        for i, (stem, ext, boxes) in enumerate(SPLITS[split]):
            _image(root / split / f"{stem}{ext}", i)
            (root / split / f"{stem}.xml").write_text(_voc_xml(stem, ext, boxes))
    _image(root / "train" / "unannotated.jpg", 9)
    return root


def make_roboflow_yolo(root: Path) -> Path:
    """Roboflow YOLO export: data.yaml with ../ paths beside train/ valid/ test/ (images/, labels/)."""
    for split, items in SPLITS.items():
        for i, (stem, ext, boxes) in enumerate(items):
            _image(root / split / "images" / f"{stem}{ext}", i)
            lines = [f"{c} {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}" for c, x1, y1, x2, y2 in boxes]
            label = root / split / "labels" / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\n"
                                    "names: ['RBC', 'WBC']\n\nroboflow:\n  workspace: me\n  version: 1\n")
    return root


def _coco(items: list, folder: Path, with_supercategory: bool) -> dict:
    cats = [{"id": i + 1, "name": n, "supercategory": "cells"} for i, n in enumerate(NAMES)]
    if with_supercategory:
        cats = [{"id": 0, "name": "cells", "supercategory": "none"}] + cats
    images, anns = [], []
    for i, (stem, ext, boxes) in enumerate(items):
        _image(folder / f"{stem}{ext}", i)
        images.append({"id": i, "file_name": f"{stem}{ext}", "width": W, "height": H})
        anns += [{"id": len(anns), "image_id": i, "category_id": c + 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                  "iscrowd": 0} for c, x1, y1, x2, y2 in boxes]
    return {"info": {}, "images": images, "annotations": anns, "categories": cats}


def make_roboflow_coco(root: Path) -> Path:
    """Roboflow COCO export: <split>/_annotations.coco.json beside the images, with the supercategory entry."""
    for split, items in SPLITS.items():
        (root / split).mkdir(parents=True)
        (root / split / "_annotations.coco.json").write_text(json.dumps(_coco(items, root / split, True)))
    return root


def make_cvat_coco(root: Path) -> Path:
    """CVAT COCO export: annotations/instances_default.json and images/ (one split: a hold-out validates)."""
    (root / "annotations").mkdir(parents=True)
    data = _coco(SPLITS["train"] + SPLITS["valid"], root / "images", False)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return root


def _counts(data: dict, split: str) -> tuple[int, int, list[str]]:
    index = read_split(data, split)
    return len(index.records), index.num_boxes, index.class_names


def test_labelimg_split_folders(tmp_path):
    layout = discover(make_labelimg(tmp_path / "ds"))
    assert layout.format == "labelimg" and layout.splits == {"test": "test", "train": "train", "val": "valid"}
    data = layout.data_config()
    assert data["holdout"] == 0.0
    assert _counts(data, "train") == (4, 6, NAMES) and _counts(data, "val") == (2, 2, NAMES) and _counts(data, "test") == (1, 1, NAMES)
    defects = read_split(data, "train").defects
    assert [(Path(d.file).name, d.kind.value) for d in defects] == [("unannotated.jpg", "missing_annotation")]


def test_labelimg_single_folder_holds_out_a_seeded_tenth(tmp_path):
    root = tmp_path / "flat"
    for split in ("train", "valid", "test"):  # everything in one folder
        for i, (stem, ext, boxes) in enumerate(SPLITS[split]):
            _image(root / f"{stem}{ext}", i)
            (root / f"{stem}.xml").write_text(_voc_xml(stem, ext, boxes))
    layout = discover(root)
    assert layout.format == "labelimg" and layout.splits == {"train": "."}
    data = layout.data_config()
    assert data["holdout"] == 0.1
    train, val = read_split(data, "train"), read_split(data, "val")
    assert len(train.records) == 6 and len(val.records) == 1  # round(0.1 * 7) = 1, at least one
    again = read_split(data, "val")
    assert [r.path for r in again.records] == [r.path for r in val.records]  # same data, same seed: same hold-out
    assert {r.path for r in train.records}.isdisjoint(r.path for r in val.records)
    other_train, other_val = holdout(read_split({**data, "holdout": 0.0}, "train"), 0.5, seed=7)
    assert len(other_val.records) == 4 and len(other_train.records) == 3


def test_roboflow_yolo_paths_resolve_as_ultralytics_does(tmp_path):
    root = make_roboflow_yolo(tmp_path / "rf")
    layout = discover(root)
    assert layout.format == "yolo" and layout.root == root / "data.yaml" and set(layout.splits) == {"train", "val", "test"}
    data = layout.data_config()
    assert _counts(data, "train") == (4, 6, NAMES) and _counts(data, "val") == (2, 2, NAMES) and _counts(data, "test") == (1, 1, NAMES)
    (root / "data.yaml").write_text("train: ../train/images\nval: ../nowhere/images\nnames: ['RBC', 'WBC']\n")
    with pytest.raises(DatasetError, match=r"split path '../nowhere/images' not found \(tried .*rf/../nowhere/images, .*rf/nowhere/images\)"):
        read_split(discover(root).data_config(), "val")


def test_roboflow_coco_drops_the_supercategory_entry(tmp_path):
    layout = discover(make_roboflow_coco(tmp_path / "rfc"))
    assert layout.format == "coco" and set(layout.splits) == {"train", "val", "test"}
    data = layout.data_config()
    assert _counts(data, "train") == (4, 6, NAMES) and _counts(data, "val") == (2, 2, NAMES)
    index = read_split(data, "train")
    assert index.category_ids == [1, 2]
    [phantom] = [d for d in index.defects if d.kind.value == "unused_category"]
    assert "'cells'" in phantom.detail and phantom.action == "class dropped"


def test_cvat_coco_and_a_single_json(tmp_path):
    root = make_cvat_coco(tmp_path / "cvat")
    layout = discover(root)
    assert layout.format == "coco" and list(layout.splits) == ["train"]
    data = layout.data_config()
    assert data["holdout"] == 0.1 and _counts(data, "train")[0] + _counts(data, "val")[0] == 6
    single = discover(root / "annotations" / "instances_default.json").data_config()
    assert single["splits"]["train"]["ann"] == "instances_default.json" and len(read_split(single, "train").records) + 1 == 6


def test_annotations_in_no_known_layout_are_never_an_unlabeled_folder(tmp_path):
    odd = tmp_path / "odd"
    _image(odd / "images" / "x.jpg", 0)
    (odd / "labels.json").write_text("{}")
    with pytest.raises(DatasetError, match="holds annotation files"):
        discover(odd)
    plain = tmp_path / "plain"
    _image(plain / "x.jpg", 0)
    with pytest.raises(DatasetError, match="images without annotations"):
        discover(plain)


def test_check_tool_reports_every_split_of_a_labelimg_folder(tmp_path):
    root = make_labelimg(tmp_path / "ds")
    proc = subprocess.run([sys.executable, "tools/check_dataset.py", str(root), "--strict"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the unannotated image is a defect
    assert "layout: labelimg" in proc.stdout and "splits found: test" in proc.stdout and "read: all of them" in proc.stdout
    assert "boxes:  6 kept of 6 annotated" in proc.stdout and "unannotated.jpg: missing_annotation" in proc.stdout
    _, reports = check_layout(root)
    assert [(r.split, r.images_usable, r.boxes_kept) for r in reports] == [("test", 1, 1), ("train", 4, 6), ("val", 2, 2)]


@pytest.mark.parametrize(("make", "train_line"), [
    (make_labelimg, "[data] train: 4 of 5 images, 6 boxes"), (make_roboflow_yolo, "[data] train: 4 of 4 images, 6 boxes"),
    (make_roboflow_coco, "[data] train: 4 of 4 images, 6 boxes"), (make_cvat_coco, "[data] train: 5 of 5 images"),
])
def test_one_epoch_through_data_without_a_config_edit(make, train_line, tmp_path):
    root = make(tmp_path / "ds")
    cmd = [sys.executable, "tools/train.py", "configs/train/fyolo.py", "--data", str(root), "--work-dir", str(tmp_path / "w"),
           "--cfg-options", "imgsz=64", "model.width=0.125", "train.epochs=1", "train.batch_size=2", "train.num_workers=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert train_line in proc.stdout and "[data] 2 classes: RBC, WBC" in proc.stdout
    assert ("held out: 10% of train" in proc.stdout) == (make is make_cvat_coco)
    resolved = (tmp_path / "w" / "fyolo.py").read_text()
    assert str(root) in resolved and "holdout" in resolved  # the data and its hold-out are in the run's config
    assert (tmp_path / "w" / "epoch_1.pth").is_file()


def test_distill_and_eval_through_data_and_every_tool_takes_it(tmp_path):
    root = make_labelimg(tmp_path / "ds")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    small = ["--cfg-options", "imgsz=64", "model.width=0.125", "train.epochs=1", "train.batch_size=2", "train.num_workers=0"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    run("tools/train.py", "configs/train/fyolo.py", "--data", str(root), "--work-dir", str(tmp_path / "t"), *small)
    teacher = tmp_path / "t" / "epoch_1.pth"
    run("tools/train_distill.py", "configs/distill/fyolo.py", "--data", str(root), "--work-dir", str(tmp_path / "s"),
        "--teacher-ckpt", str(teacher), *small)
    metrics = run("tools/eval.py", "configs/train/fyolo.py", str(tmp_path / "s" / "epoch_1.pth"), "--data", str(root), "--split", "test")
    assert "AP50" in metrics.stdout
    for tool in ("train", "train_distill", "prune", "eval", "export", "benchmark"):
        assert "--data PATH" in run(f"tools/{tool}.py", "--help").stdout, tool


def test_kmeans_anchors_fall_back_on_a_dataset_with_too_few_boxes(tmp_path):
    from detkd.engine.runner import build_detector

    root = tmp_path / "one"
    _image(root / "a.jpg", 0)
    (root / "a.xml").write_text(_voc_xml("a", ".jpg", [(0, 4, 4, 30, 30), (1, 30, 10, 60, 40)]))
    index = read_split(discover(root).data_config(holdout=0.0), "train")
    with pytest.warns(UserWarning, match="k-means anchors: k-means needs at least k=5 boxes, got 2; using the default anchors"):
        model = build_detector({"name": "fyolo", "width": 0.125, "anchors": "kmeans", "num_anchors": 5}, index.class_names, 64, index)
    assert len(model.anchors) == 5
