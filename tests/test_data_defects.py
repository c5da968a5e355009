"""Every kind of bad input produces its named defect, and training skips instead of crashing."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detkd.data import DatasetError, DatasetWarning, DetectionDataset, check_dataset
from detkd.data.coco import read_coco
from detkd.data.images import load_image, to_rgb8
from detkd.data.records import DefectKind
from detkd.data.voc import read_voc
from detkd.data.writers import coco_dict, write_voc, write_yolo
from detkd.data.yolo_txt import read_yolo
from tests.conftest import CLASSES, SHARED_BCCD, write_image

REPO = Path(__file__).resolve().parents[1]


def _voc_xml(filename: str, objects: list[tuple[str, list[float]]], size: tuple[int, int] = (64, 48)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    return f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width><height>{size[1]}</height></size>{objs}</annotation>"


def _broken_voc(root: Path) -> Path:
    """A VOC dataset with one defect of every kind, each in its own file."""
    ann, img = root / "Annotations", root / "JPEGImages"
    ann.mkdir(parents=True)
    good = [("cat", [1, 1, 20, 20])]
    cases = {
        "ok": good,
        "outside": [("cat", [-5, 2, 70, 30])],
        "zero": [("dog", [10, 10, 10, 10]), ("cat", [1, 1, 5, 5])],
        "unknown": [("unicorn", [1, 1, 9, 9]), ("cat", [1, 1, 5, 5])],
        "empty": [],
        "missing_img": good,
        "badbox": [("cat", ["a", 1, 5, 5])],
        "unreadable": good,
        "truncated": good,
    }
    for stem, objects in cases.items():
        (ann / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", objects))  # type: ignore[arg-type]
        if stem != "missing_img":
            write_image(img / f"{stem}.jpg", 64, 48, seed=len(stem))
    (ann / "malformed.xml").write_text("<annotation><object><name>cat</name>")  # cut off
    write_image(img / "malformed.jpg", 64, 48)
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            "<annotation><filename>&lol2;</filename></annotation>")
    (ann / "bomb.xml").write_text(bomb)
    write_image(img / "bomb.jpg", 64, 48)
    (img / "unreadable.jpg").write_bytes(b"this is not a jpeg at all")
    data = (img / "truncated.jpg").read_bytes()
    (img / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "ImageSets" / "Main").mkdir(parents=True)
    ids = [*cases, "malformed", "bomb", "no_xml"]
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def _kinds_by_file(defects) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for d in defects:
        found.setdefault(Path(d.file).stem, set()).add(d.kind.value)
    return found


def test_every_voc_defect_is_named_by_file(tmp_path):
    root = _broken_voc(tmp_path / "voc")
    index = read_voc(root, "train", CLASSES, check="full")
    found = _kinds_by_file(index.defects)
    assert found == {
        "outside": {"box_outside_image"},
        "zero": {"zero_area_box"},
        "unknown": {"unknown_class"},
        "empty": {"empty_annotation"},
        "missing_img": {"missing_image"},
        "badbox": {"malformed_annotation"},
        "unreadable": {"unreadable_image"},
        "truncated": {"truncated_image"},
        "malformed": {"malformed_annotation"},
        "bomb": {"malformed_annotation"},
        "no_xml": {"missing_annotation"},
    }
    by_stem = {r.path.stem: r for r in index.records}
    assert sorted(by_stem) == ["badbox", "empty", "ok", "outside", "unknown", "zero"]
    np.testing.assert_array_equal(by_stem["outside"].boxes, [[0, 2, 64, 30]])  # clipped to the image
    np.testing.assert_array_equal(by_stem["zero"].boxes, [[1, 1, 5, 5]])
    assert by_stem["unknown"].labels.tolist() == [0]
    # <object> elements of every parsable XML: 1+1+2+2+0+1+1+1+1 (the cut-off XML has none to count)
    assert index.num_annotated_boxes == 10
    bomb = next(d for d in index.defects if "bomb" in d.file)
    assert "EntitiesForbidden" in bomb.detail or "entit" in bomb.detail.lower()


def test_header_check_then_training_skips_truncated_image_with_counted_warning(tmp_path):
    root = _broken_voc(tmp_path / "voc")
    index = read_voc(root, "train", CLASSES, check="header")  # header read cannot see the truncation
    stems = [r.path.stem for r in index.records]
    assert "truncated" in stems and "unreadable" not in stems
    dataset = DetectionDataset(index)
    position = stems.index("truncated")
    with pytest.warns(DatasetWarning, match=r"truncated\.jpg: truncated_image: .*\[1 skipped so far\]"):
        _, target = dataset[position]
    assert target["image_id"] == index.records[(position + 1) % len(stems)].image_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known-bad file is not decoded or reported again
        dataset[position]
    assert dataset.skipped == [str(root / "JPEGImages" / "truncated.jpg")]


def test_nothing_usable_is_a_clear_error(tmp_path):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(_voc_xml("a.jpg", [("cat", [1, 1, 5, 5])]))
    index = read_voc(root, None, CLASSES)
    with pytest.raises(DatasetError, match=r"voc: no usable images \(missing_image: 1\)"):
        DetectionDataset(index)
    (root / "JPEGImages").mkdir()
    (root / "JPEGImages" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    index = read_voc(root, None, CLASSES, check="header")
    if index.records:  # header parsing may or may not accept this stub
        with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match="none of the 1 images could be read"):
            DetectionDataset(index)[0]


def test_coco_defects(fixture_index, tmp_path):
    data = coco_dict(fixture_index, fixture_index.image_root)
    data["annotations"] += [
        {"id": 90, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]},
        {"id": 91, "image_id": 77, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 92, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5]},
        {"id": 93, "image_id": 2, "category_id": 1, "bbox": [40, 60, 20, 20]},
        {"id": 94, "image_id": 2, "category_id": 1, "bbox": [5, 5, 0, 3]},
    ]
    data["images"].append({"id": 4, "file_name": "gone.jpg", "width": 5, "height": 5})
    data["images"][1]["width"] = 51
    (tmp_path / "c.json").write_text(json.dumps(data))
    index = read_coco(tmp_path / "c.json", fixture_index.image_root)
    details = {(d.kind, d.detail.split(":")[0]) for d in index.defects}
    assert (DefectKind.UNKNOWN_CLASS, "annotation 90") in details
    assert (DefectKind.MALFORMED_ANNOTATION, "annotation 91") in details
    assert (DefectKind.MALFORMED_ANNOTATION, "annotation 92") in details
    kinds = [d.kind for d in index.defects]
    assert DefectKind.BOX_OUTSIDE_IMAGE in kinds and DefectKind.ZERO_AREA_BOX in kinds
    assert DefectKind.MISSING_IMAGE in kinds and DefectKind.SIZE_MISMATCH in kinds
    assert DefectKind.EMPTY_ANNOTATION in kinds
    assert index.num_annotated_boxes == 8


def test_malformed_json_is_fatal_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(DatasetError, match=r"bad\.json: malformed JSON at line 2"):
        read_coco(bad, tmp_path)
    report = check_dataset(bad)
    assert report.fatal is not None and "line 2" in report.fatal


def test_yolo_defects(fixture_index, tmp_path):
    write_yolo(fixture_index, tmp_path / "y", "train")
    labels = tmp_path / "y" / "labels" / "train"
    (labels / "img_a.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n0 0.5 0.5\n0 x 0.5 0.2 0.2\n1 0.95 0.5 0.2 0.2\n")
    (labels / "img_b.txt").unlink()
    index = read_yolo(tmp_path / "y", "train")
    found = [(Path(d.file).stem, d.kind.value, d.detail.split(":")[0]) for d in index.defects]
    assert ("img_a", "unknown_class", "line 2") in found
    assert ("img_a", "malformed_annotation", "line 3") in found
    assert ("img_a", "malformed_annotation", "line 4") in found
    outside = [d for d in index.defects if d.kind == DefectKind.BOX_OUTSIDE_IMAGE]
    assert [d.detail for d in outside] == ["line 5 [54.4, 19.2, 67.2, 28.8] exceeds image 64x48"]
    np.testing.assert_allclose(index.records[0].boxes[1], [54.4, 19.2, 64, 28.8], atol=1e-4)
    assert ("img_b", "empty_annotation", "no label file (background image)") in found
    assert index.records[0].num_boxes == 2


def test_check_tool_lists_defects_and_never_tracebacks(tmp_path):
    root = _broken_voc(tmp_path / "voc")
    out = tmp_path / "report.json"
    tool = [sys.executable, str(REPO / "tools" / "check_dataset.py")]
    proc = subprocess.run([*tool, str(root), "--split", "train", "--json", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "truncated.jpg: truncated_image" in proc.stdout and "missing_image" in proc.stdout
    report = json.loads(out.read_text())
    assert report["images_listed"] == 12 and report["images_usable"] == 6
    assert report["defect_counts"]["zero_area_box"] == 1
    strict = subprocess.run([*tool, str(root), "--split", "train", "--strict"], capture_output=True, text=True)
    assert strict.returncode == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    fatal = subprocess.run([*tool, str(bad)], capture_output=True, text=True)
    assert fatal.returncode == 2 and "FATAL" in fatal.stdout and "Traceback" not in fatal.stderr


@pytest.mark.skipif(not SHARED_BCCD.is_dir(), reason="BCCD sample data not present")
def test_bccd_counts_and_its_two_zero_area_boxes():
    report = check_dataset(SHARED_BCCD, decode=True)
    assert report.fatal is None
    assert report.images_listed == report.images_usable == 364
    assert report.boxes_annotated == 4888 and report.boxes_kept == 4886
    assert report.class_histogram == {"Platelets": 361, "RBC": 4153, "WBC": 372}
    zero = [d for d in report.defects if d.kind == DefectKind.ZERO_AREA_BOX]
    assert [Path(d.file).name for d in zero] == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert len(report.defects) == 2


def test_voc_writer_keeps_difficult_flag(fixture_index, tmp_path):
    write_voc(fixture_index, tmp_path / "v", "s")
    assert read_voc(tmp_path / "v", "s", CLASSES).records[0].difficult.tolist() == [False, True]


def _gradient16(height: int = 32, width: int = 64) -> np.ndarray:
    """uint16 values from 0 to 65535 (both included) in row-major order."""
    return np.linspace(0, 65535, height * width).round().astype(np.uint16).reshape(height, width)


def test_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    values = _gradient16()
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL really holds 16-bit data for this file
    pixels = load_image(path)
    assert pixels.shape == (*values.shape, 3) and pixels.dtype == np.uint8
    expected = np.round(values / 257.0)
    for channel in range(3):
        assert np.abs(pixels[..., channel].astype(int) - expected).max() <= 1
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    assert abs(float(pixels.mean()) - 127.5) < 2  # a gradient, not a nearly white image


def test_16_bit_rgb_png_is_scaled_to_8_bits(tmp_path):
    gray = _gradient16()
    rgb = np.stack([gray, gray[::-1, ::-1], np.full_like(gray, 257 * 40)], axis=-1)
    path = tmp_path / "rgb48.png"
    assert cv2.imwrite(str(path), rgb[..., ::-1].copy())  # OpenCV writes BGR, 16 bits per channel
    pixels = load_image(path)
    assert pixels.shape == rgb.shape and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - np.round(rgb / 257.0)).max() <= 1
    assert np.all(pixels[..., 2] == 40) and float(pixels.mean()) < 100


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_pil_modes_scale_by_257(mode):
    values = np.array([[0, 128, 129, 257, 32768], [40000, 65279, 65534, 65535, 70000]], dtype=np.int64)
    clipped = np.clip(values, 0, 65535)
    if mode == "I":
        image = Image.fromarray(values.astype(np.int32))
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        image = Image.frombytes(mode, (values.shape[1], values.shape[0]), clipped.astype(dtype).tobytes())
    assert image.mode == mode
    pixels = to_rgb8(image)
    np.testing.assert_array_equal(pixels[..., 0], np.round(clipped / 257.0))
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_float_images_scale_from_unit_range_or_stretch_their_own_range():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(to_rgb8(unit)[0, :, 1], [0, 128, 255])
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32))
    np.testing.assert_array_equal(to_rgb8(wide)[0, :, 1], [0, 128, 255])


def _voc_with_unannotated_image(root: Path) -> Path:
    """``a`` is annotated; ``b`` has an image and is listed in the split but has no XML."""
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(_voc_xml("a.jpg", [("cat", [1, 1, 20, 20])]))
    write_image(root / "JPEGImages" / "a.jpg", 64, 48)
    write_image(root / "JPEGImages" / "b.jpg", 64, 48, seed=1)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    return root


def test_voc_listed_image_without_xml_is_a_missing_annotation_defect(tmp_path):
    root = _voc_with_unannotated_image(tmp_path / "voc")
    index = read_voc(root, "train", CLASSES)
    assert [(Path(d.file).name, d.kind, d.action) for d in index.defects] == [
        ("b.xml", DefectKind.MISSING_ANNOTATION, "skipped image")
    ]
    assert index.num_listed == 2 and [r.path.stem for r in index.records] == ["a"]
    tool = [sys.executable, str(REPO / "tools" / "check_dataset.py"), str(root), "--split", "train"]
    proc = subprocess.run(tool, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "images: 1 usable of 2 listed" in proc.stdout and "missing_annotation=1" in proc.stdout
    assert "b.xml: missing_annotation: listed in the split, no XML (skipped image)" in proc.stdout


def test_voc_without_split_reports_images_that_no_xml_annotates(tmp_path):
    root = _voc_with_unannotated_image(tmp_path / "voc")
    (root / "Annotations" / "c.xml").write_text(_voc_xml("c_photo.jpg", [("dog", [1, 1, 9, 9])]))
    write_image(root / "JPEGImages" / "c_photo.jpg", 64, 48, seed=2)  # annotated through <filename>
    index = read_voc(root, None, CLASSES)
    assert [(Path(d.file).name, d.kind) for d in index.defects] == [("b.jpg", DefectKind.MISSING_ANNOTATION)]
    assert index.num_listed == 3 and sorted(r.path.name for r in index.records) == ["a.jpg", "c_photo.jpg"]
    report = check_dataset(root, "voc")
    assert report.defect_counts() == {"missing_annotation": 1} and report.images_listed == 3


def test_coco_image_whose_file_is_missing_is_reported_once(fixture_index, tmp_path):
    data = coco_dict(fixture_index, fixture_index.image_root)
    data["images"].append({"id": 4, "file_name": "gone.jpg", "width": 5, "height": 5})  # no annotations either
    (tmp_path / "c.json").write_text(json.dumps(data))
    index = read_coco(tmp_path / "c.json", fixture_index.image_root)
    about_gone = [d for d in index.defects if "gone.jpg" in d.file or "image 4 " in d.detail]
    assert [(d.kind, d.action) for d in about_gone] == [(DefectKind.MISSING_IMAGE, "skipped image")]
    # the image that exists and has no annotations is still reported, once, as a kept background image
    empty = [d for d in index.defects if d.kind == DefectKind.EMPTY_ANNOTATION]
    assert [d.detail for d in empty] == ["image 3 has no annotations"] and empty[0].action == "kept"


def test_voc_missing_image_with_empty_xml_is_reported_once(tmp_path):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(_voc_xml("a.jpg", []))
    index = read_voc(root, None, CLASSES)
    assert [d.kind for d in index.defects] == [DefectKind.MISSING_IMAGE]
