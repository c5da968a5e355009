"""The generator and the converter write only into new or empty folders, or into folders they made:
a user's dataset is refused before anything is written, and stays byte-identical."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detkd.config import ensure_generated
from detkd.data.outdir import CONVERTED_STAMP, GENERATED_STAMP
from detkd.data.synthetic import generate_synthetic
from detkd.data.synthetic_folder import generated_files
from detkd.data.voc import read_voc
from detkd.data.yolo_txt import read_yolo
from detkd.errors import DatasetError
from tests.conftest import CLASSES, write_image

REPO = Path(__file__).resolve().parents[1]
TINY = {"train": 3, "val": 1, "test": 0, "unlabeled": 1}


def _fake_voc(root: Path) -> Path:
    """A user's small VOC dataset: one XML, one JPEG, one split list."""
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "photo.xml").write_text(
        "<annotation><filename>photo.jpg</filename><size><width>64</width><height>48</height></size>"
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>"
        "</object></annotation>"
    )
    write_image(root / "JPEGImages" / "photo.jpg", 64, 48)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("photo\n")
    return root


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (and the set of folders), by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


def _generate(out: Path, counts: dict[str, int] = TINY, seed: int = 0) -> None:
    generate_synthetic(out, seed, counts, size=48, workers=1, progress=False)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_generate_refuses_a_users_dataset_and_leaves_it_byte_identical(tmp_path: Path) -> None:
    user = _fake_voc(tmp_path / "mine")
    before = _digest(user)
    with pytest.raises(DatasetError, match=r"mine is not empty and was not made by detkd's generator; nothing was "
                                           r"written\. Choose an empty or new folder \(data\.root / --out\)"):
        _generate(user)
    assert _digest(user) == before


def test_generate_into_new_or_empty_folder_then_regenerate(tmp_path: Path) -> None:
    new, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for out in (new, empty):
        _generate(out)
        stamp = json.loads((out / GENERATED_STAMP).read_text())
        assert stamp["tool"] == "detkd.data.synthetic" and stamp["counts"] == TINY and stamp["seed"] == 0
        assert _tree(out) == {*generated_files(TINY), GENERATED_STAMP}
    assert _digest(new) == _digest(empty)
    (new / "params.json").write_text("{}")  # ensure_generated's record of the config: stale after regenerating
    smaller = {"train": 1, "val": 1, "test": 1, "unlabeled": 0}
    _generate(new, smaller, seed=3)  # the generator's own folder: its earlier files go, only the new ones stay
    fresh = tmp_path / "fresh"
    _generate(fresh, smaller, seed=3)
    assert _tree(new) == {*generated_files(smaller), GENERATED_STAMP}
    assert _digest(new) == _digest(fresh)


def test_generate_keeps_files_it_did_not_write_in_its_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    _generate(out)
    (out / "notes.txt").write_text("mine")
    _generate(out, {"train": 1})
    assert (out / "notes.txt").read_text() == "mine"
    assert _tree(out) == {*generated_files({"train": 1}), GENERATED_STAMP, "notes.txt"}


def test_a_folder_generated_before_stamps_existed_may_be_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "old"
    _generate(out)
    (out / GENERATED_STAMP).unlink()
    (out / "params.json").write_text("{}")
    _generate(out, {"train": 1})
    assert _tree(out) == {*generated_files({"train": 1}), GENERATED_STAMP}


def test_ensure_generated_refuses_a_users_dataset(tmp_path: Path) -> None:
    """What ``tools/train.py configs/train/fyolo_synthetic.py --cfg-options data.root=<a VOC copy>`` does."""
    user = _fake_voc(tmp_path / "copy_of_voc")
    before = _digest(user)
    data = {"root": str(user), "generate": {"seed": 0, "train": 2, "val": 1, "test": 0, "unlabeled": 0, "size": 48}}
    with pytest.raises(DatasetError, match="copy_of_voc is not empty and was not made by detkd's generator"):
        ensure_generated(data)
    assert _digest(user) == before


def _run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def _assert_refused(proc: subprocess.CompletedProcess[str], folder: Path) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], proc.stderr


def test_make_dataset_tool_refuses_a_users_dataset(tmp_path: Path) -> None:
    user = _fake_voc(tmp_path / "mine")
    before = _digest(user)
    proc = _run_tool("tools/make_dataset.py", "synthetic", "--out", str(user), "--train", "2", "--val", "1",
                     "--test", "0", "--unlabeled", "0", "--size", "48", "--workers", "1", "--no-progress")
    _assert_refused(proc, user)
    assert "nothing was written" in proc.stderr
    assert _digest(user) == before


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_convert_tool_refuses_a_non_empty_folder_it_did_not_make(tmp_path: Path, fmt: str) -> None:
    source = _fake_voc(tmp_path / "src")
    user = _fake_voc(tmp_path / "mine")
    before = _digest(user)
    proc = _run_tool("tools/convert.py", str(source), "--to", fmt, "--split", "train", "--out", str(user))
    _assert_refused(proc, user)
    assert _digest(user) == before


def test_convert_tool_refuses_a_coco_file_it_did_not_write_unless_overwrite(tmp_path: Path) -> None:
    source = _fake_voc(tmp_path / "src")
    theirs = tmp_path / "instances_train.json"
    theirs.write_text('{"images": [], "annotations": [], "categories": []}')
    args = ["tools/convert.py", str(source), "--to", "coco", "--split", "train", "--out", str(theirs)]
    proc = _run_tool(*args)
    _assert_refused(proc, theirs)
    assert "--overwrite" in proc.stderr and json.loads(theirs.read_text())["images"] == []
    assert _run_tool(*args, "--overwrite").returncode == 0
    assert len(json.loads(theirs.read_text())["images"]) == 1
    assert _run_tool(*args).returncode == 0  # now it is one this tool wrote: replaced without --overwrite


def test_convert_into_its_own_folder_adds_splits_and_replaces_a_split(tmp_path: Path) -> None:
    source = _fake_voc(tmp_path / "src")
    write_image(source / "JPEGImages" / "extra.jpg", 64, 48, seed=5)
    (source / "Annotations" / "extra.xml").write_text((source / "Annotations" / "photo.xml").read_text())
    (source / "ImageSets" / "Main" / "val.txt").write_text("photo\nextra\n")
    for fmt in ("yolo", "voc"):
        out = tmp_path / f"out_{fmt}"
        for split in ("train", "val"):
            proc = _run_tool("tools/convert.py", str(source), "--to", fmt, "--split", split, "--out", str(out))
            assert proc.returncode == 0, proc.stderr
        stamp = json.loads((out / CONVERTED_STAMP).read_text())
        assert stamp == {"tool": "tools/convert.py", "format": fmt, "splits": ["train", "val"]}
        (source / "ImageSets" / "Main" / "val.txt").write_text("photo\n")
        proc = _run_tool("tools/convert.py", str(source), "--to", fmt, "--split", "val", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        (source / "ImageSets" / "Main" / "val.txt").write_text("photo\nextra\n")
        index = read_yolo(out, "val") if fmt == "yolo" else read_voc(out, "val", CLASSES)
        assert [r.path.stem for r in index.records] == ["photo"]  # extra's files from the first run are gone
        assert "extra" not in {Path(p).stem for p in _tree(out)}
        train = read_yolo(out, "train") if fmt == "yolo" else read_voc(out, "train", CLASSES)
        assert [r.path.stem for r in train.records] == ["photo"]  # the other split is untouched
