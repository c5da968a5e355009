"""The same annotations written as VOC, COCO and YOLO-txt read back identically; converters round-trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from detkd.data import DetectionDataset, build_dataloader, build_eval_transform, read_index
from detkd.data.coco import read_coco
from detkd.data.folder import read_folder
from detkd.data.records import DatasetIndex
from detkd.data.voc import read_voc
from detkd.data.writers import coco_dict, write_coco, write_voc, write_yolo
from detkd.data.yolo_txt import read_yolo
from tests.conftest import CLASSES, write_image

REPO = Path(__file__).resolve().parents[1]


def _write_all(index: DatasetIndex, tmp_path: Path) -> dict[str, DatasetIndex]:
    write_voc(index, tmp_path / "voc", "train")
    write_coco(index, tmp_path / "coco.json", index.image_root)
    write_yolo(index, tmp_path / "yolo", "train")
    return {
        "voc": read_voc(tmp_path / "voc", "train", CLASSES),
        "coco": read_coco(tmp_path / "coco.json", index.image_root),
        "yolo": read_yolo(tmp_path / "yolo", "train"),
    }


def test_same_fixture_in_three_formats_gives_identical_targets(fixture_index, tmp_path):
    read_back = _write_all(fixture_index, tmp_path)
    for fmt, index in read_back.items():
        assert index.class_names == CLASSES, fmt
        assert [r.image_id for r in index.records] == [1, 2, 3], fmt
        for ours, theirs in zip(fixture_index.records, index.records, strict=True):
            assert (theirs.width, theirs.height) == (ours.width, ours.height), fmt
            np.testing.assert_allclose(theirs.boxes, ours.boxes, atol=1e-4, err_msg=fmt)
            np.testing.assert_array_equal(theirs.labels, ours.labels, err_msg=fmt)
            if fmt != "yolo":  # YOLO-txt has no difficult flag
                np.testing.assert_array_equal(theirs.difficult, ours.difficult, err_msg=fmt)
    # the torch items agree too, across formats
    items = {fmt: DetectionDataset(idx)[0] for fmt, idx in read_back.items()}
    for fmt in ("coco", "yolo"):
        assert torch.equal(items[fmt][0], items["voc"][0])
        torch.testing.assert_close(items[fmt][1]["boxes"], items["voc"][1]["boxes"], atol=1e-4, rtol=0)
    # the image without objects is kept as a background image and reported as empty
    assert read_back["voc"].records[2].num_boxes == 0
    assert [d.kind.value for d in read_back["voc"].defects] == ["empty_annotation"]


def test_item_convention(fixture_index):
    image, target = DetectionDataset(fixture_index)[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [0, 2]
    assert target["difficult"].tolist() == [False, True]
    assert target["image_id"] == 1 and target["orig_size"] == (48, 64)
    assert target["labeled"] is True and target["scale"] == (1.0, 1.0)


def test_voc_to_coco_to_voc_round_trip(fixture_index, tmp_path):
    write_voc(fixture_index, tmp_path / "voc", "val")
    voc = read_voc(tmp_path / "voc", "val", CLASSES)
    first = coco_dict(voc, voc.image_root)
    write_coco(voc, tmp_path / "a.json", voc.image_root)
    coco = read_coco(tmp_path / "a.json", voc.image_root)
    write_voc(coco, tmp_path / "voc2", "val")
    voc2 = read_voc(tmp_path / "voc2", "val", CLASSES)
    second = coco_dict(voc2, voc2.image_root)
    for key in ("images", "annotations", "categories"):
        assert first[key] == second[key]


def test_coco_category_ids_with_gaps_map_to_contiguous_labels_and_back(fixture_index, tmp_path):
    data = coco_dict(fixture_index, fixture_index.image_root)
    remap = {1: 5, 2: 17, 3: 90}
    for cat in data["categories"]:
        cat["id"] = remap[cat["id"]]
    for ann in data["annotations"]:
        ann["category_id"] = remap[ann["category_id"]]
    (tmp_path / "gaps.json").write_text(json.dumps(data))
    index = read_coco(tmp_path / "gaps.json", fixture_index.image_root)
    assert index.category_ids == [5, 17, 90]
    assert index.records[0].labels.tolist() == [0, 2]
    assert coco_dict(index, fixture_index.image_root)["annotations"][1]["category_id"] == 90


def test_convert_tool_voc_and_yolo_to_coco(fixture_index, tmp_path):
    write_voc(fixture_index, tmp_path / "voc", "train")
    write_yolo(fixture_index, tmp_path / "yolo", "train")
    for src, out in ((tmp_path / "voc", tmp_path / "from_voc.json"), (tmp_path / "yolo" / "data.yaml", tmp_path / "from_yolo.json")):
        proc = subprocess.run(
            [sys.executable, str(REPO / "tools" / "convert.py"), str(src), "--to", "coco", "--split", "train", "--out", str(out)],
            capture_output=True, text=True, cwd=REPO,
        )
        assert proc.returncode == 0, proc.stderr
        data = json.loads(out.read_text())
        assert [img["id"] for img in data["images"]] == [1, 2, 3]
        assert [c["id"] for c in data["categories"]] == [1, 2, 3]
        assert [c["name"] for c in data["categories"]] == CLASSES
        bboxes = np.array([a["bbox"] for a in data["annotations"]])
        np.testing.assert_allclose(bboxes, [[2, 3, 28, 37], [10, 10, 50, 10], [0, 0, 50, 70]], atol=1e-4)


def test_yolo_polygon_lines_and_list_files(tmp_path):
    root = tmp_path / "poly"
    image = write_image(root / "images" / "a.jpg", 100, 50)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.8\n")
    (root / "train.txt").write_text("./images/a.jpg\n")
    (root / "data.yaml").write_text("train: train.txt\nnames: [a, b]\n")
    index = read_yolo(root, "train")
    assert index.records[0].path == image
    np.testing.assert_allclose(index.records[0].boxes, [[10, 10, 50, 40]], atol=1e-4)
    assert index.records[0].labels.tolist() == [1]


def test_folder_reader_matches_extensions_case_insensitively(tmp_path):
    write_image(tmp_path / "a.JPG", 10, 10, fmt="JPEG")
    write_image(tmp_path / "b.Png", 12, 10, fmt="PNG")
    write_image(tmp_path / "c.bmp", 8, 8, fmt="BMP")
    write_image(tmp_path / "d.jpeg", 8, 8, fmt="JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    index = read_folder(tmp_path)
    assert [r.path.name for r in index.records] == ["a.JPG", "b.Png", "c.bmp", "d.jpeg"]
    image, target = DetectionDataset(index, build_eval_transform(16))[1]
    assert image.shape == (3, 16, 16) and target["labeled"] is False and target["boxes"].shape == (0, 4)


def test_read_index_detects_formats(fixture_index, tmp_path):
    read_back = _write_all(fixture_index, tmp_path)
    assert read_index(tmp_path / "voc", split="train", class_names=CLASSES).num_boxes == read_back["voc"].num_boxes
    assert read_index(tmp_path / "yolo").num_boxes == 3
    assert read_index(tmp_path / "coco.json", img_dir=fixture_index.image_root).num_boxes == 3


def test_dataloader_with_workers_batches_letterboxed_items(fixture_index):
    dataset = DetectionDataset(fixture_index, build_eval_transform(32))
    loader = build_dataloader(dataset, batch_size=2, num_workers=2, seed=0)
    batches = list(loader)
    images, targets = batches[0]
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert [t["image_id"] for b in batches for t in b[1]] == [1, 2, 3]
    # scale maps file pixels to network pixels: 64x48 -> 32x24
    assert targets[0]["scale"] == (0.5, 0.5)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[1, 1.5, 15, 20], [5, 5, 30, 10]]))
