"""Bad checkpoint and teacher files end in one line that names the file and what to do, never a
traceback: pickled objects (naming the tool's trust flag), files that are not checkpoints, an
ultralytics .pt without trust, a model .yaml (random weights) or a dataset data.yaml as teacher, and
a checkpoint whose classes differ from the config's dataset in tools/export.py."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from detkd.data.synthetic import generate_synthetic
from detkd.distill.runner import load_teacher
from detkd.engine.checkpoint import checkpoint_model_label, load_checkpoint_file, load_detector, save_detector
from detkd.errors import CheckpointError, DetkdError, TeacherError
from detkd.models.factory import build_model, model_label

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["a", "b", "c"]
TEACHER = {"trust": False, "imgsz": None, "class_map": None}


class Payload:
    """A pickled object the safe loader must refuse."""


def _tiny(classes: list[str] = CLASSES) -> torch.nn.Module:
    return build_model("fyolo", class_names=classes, imgsz=64, width=0.125)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(exc: pytest.ExceptionInfo, path: Path) -> str:
    message = str(exc.value)
    assert "\n" not in message and str(path) in message, message
    return message


# ---- files that are not checkpoints ---------------------------------------------------------------
def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(7, 250)) * 8)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    save_detector(_tiny(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


def _random_pickle(path: Path) -> None:
    path.write_bytes(b"\x80\x02" + bytes(range(250, 7, -1)) * 4)  # starts like a pickle, is not one


def _tensor(path: Path) -> None:
    torch.save(torch.zeros(3), path)


BAD_FILES = {"random_bytes": _random_bytes, "empty": _empty, "truncated": _truncated, "other_zip": _other_zip,
             "random_pickle": _random_pickle, "tensor": _tensor}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(kind, tmp_path):
    path = tmp_path / f"{kind}.pth"
    BAD_FILES[kind](path)
    digest = _sha(path)
    for trust in (False, True):
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint_file(path, trust=trust)
        message = _one_line(exc, path)
        assert ("not a detkd checkpoint" if kind == "tensor" else "not a PyTorch checkpoint") in message
    with pytest.raises(CheckpointError) as exc:
        load_teacher({**TEACHER, "checkpoint": str(path)}, CLASSES, 64)
    _one_line(exc, path)
    assert _sha(path) == digest


def test_messages_say_why(tmp_path):
    expected = {"random_bytes": "neither a zip archive nor a pickle", "empty": "empty file",
                "truncated": "truncated or damaged zip archive", "other_zip": "without a data.pkl record: notes.txt",
                "tensor": "it holds a Tensor"}
    for kind, why in expected.items():
        path = tmp_path / f"{kind}.pth"
        BAD_FILES[kind](path)
        with pytest.raises(CheckpointError, match=why):
            load_checkpoint_file(path)


# ---- pickled objects: refused, naming the caller's trust flag --------------------------------------
@pytest.mark.parametrize("payload", [Payload(), argparse.Namespace(code="not data")], ids=["class", "namespace"])
def test_pickled_object_is_refused_naming_the_trust_flag(payload, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"meta": {}, "state_dict": {}, "payload": payload}, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint_file(path)
    message = _one_line(exc, path)
    assert "refused by the safe loader" in message and type(payload).__name__ in message
    assert message.endswith("pass --trust") and "Weights only load failed" not in message
    with pytest.raises(CheckpointError, match="pass --export-trust$"):
        load_detector(path, trust_flag="--export-trust")
    assert load_checkpoint_file(path, trust=True)["payload"].__class__ is type(payload)  # trusted: loads


def test_pickled_teacher_names_trust_teacher(tmp_path):
    teacher = _tiny()
    path = tmp_path / "teacher.pth"
    save_detector(teacher, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"] = argparse.Namespace(lr=0.1)  # what many training scripts store
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as exc:
        load_teacher({**TEACHER, "checkpoint": str(path)}, CLASSES, 64)
    message = _one_line(exc, path)
    assert "--trust-teacher" in message and "teacher.trust=True" in message
    loaded = load_teacher({**TEACHER, "checkpoint": str(path), "trust": True}, CLASSES, 64)
    assert list(loaded.class_names) == CLASSES and not loaded.training


# ---- ultralytics teachers ---------------------------------------------------------------------------
def test_untrusted_pt_teacher_is_a_teacher_error(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": None}, path)
    with pytest.raises(TeacherError) as exc:
        load_teacher({**TEACHER, "checkpoint": str(path)}, CLASSES, 64)
    message = _one_line(exc, path)
    assert "pickle" in message and "--trust-teacher" in message and "teacher.trust=True" in message


def test_trusted_pt_that_is_not_a_checkpoint(tmp_path):
    from detkd.models.ultralytics_adapter import load_ultralytics

    path = tmp_path / "best.pt"
    _random_bytes(path)
    with pytest.raises(CheckpointError) as exc:
        load_teacher({**TEACHER, "checkpoint": str(path), "trust": True}, CLASSES, 64)
    assert "not a PyTorch checkpoint" in _one_line(exc, path)
    torch.save({"weights": torch.zeros(2)}, path)  # a torch file without an ultralytics model
    with pytest.raises(CheckpointError) as exc:
        load_ultralytics(str(path), imgsz=64, trust=True)
    assert "not an ultralytics model checkpoint" in _one_line(exc, path)
    with pytest.raises(PermissionError):  # still a PermissionError for callers that catch one
        load_ultralytics(str(path), imgsz=64)


def _model_yaml(tmp_path: Path) -> Path:
    """A copy of ultralytics' YOLOv8 model description, as a local file."""
    package = Path(importlib.util.find_spec("ultralytics").submodule_search_locations[0])
    return Path(shutil.copy(package / "cfg" / "models" / "v8" / "yolov8.yaml", tmp_path / "yolov8n.yaml"))


def _data_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text("path: /data/bccd\ntrain: images/train\nval: images/val\nnc: 3\nnames: [a, b, c]\n")
    return path


def test_model_yaml_teacher_needs_allow_untrained(tmp_path):
    for path in (_model_yaml(tmp_path), Path("yolov8n.yaml")):  # a local file, a name ultralytics ships
        with pytest.raises(TeacherError) as exc:
            load_teacher({**TEACHER, "checkpoint": str(path)}, CLASSES, 64)
        message = _one_line(exc, path)
        assert "random weights" in message and "teacher.allow_untrained=True" in message
    teacher = load_teacher({**TEACHER, "checkpoint": str(tmp_path / "yolov8n.yaml"), "allow_untrained": True}, CLASSES, 64)
    assert teacher.class_names == CLASSES and teacher.imgsz == 64


def test_dataset_yaml_teacher_is_named_as_such(tmp_path):
    from detkd.errors import ConfigError
    from detkd.models.ultralytics_adapter import load_ultralytics

    path = _data_yaml(tmp_path)
    for allow in (False, True):
        with pytest.raises(TeacherError) as exc:
            load_teacher({**TEACHER, "checkpoint": str(path), "allow_untrained": allow}, CLASSES, 64)
        assert str(exc.value) == (f"{path} is a dataset description (data.yaml), not a model; "
                                  "pass a trained teacher checkpoint (.pth or .pt)")
    with pytest.raises(ConfigError, match="dataset description"):  # also outside distillation
        load_ultralytics(str(path), CLASSES, imgsz=64)
    other = tmp_path / "other.yaml"
    other.write_text("lr: 0.1\n")
    with pytest.raises(TeacherError, match="no backbone and head"):
        load_teacher({**TEACHER, "checkpoint": str(other), "allow_untrained": True}, CLASSES, 64)


def test_class_mismatch_is_a_detkd_error(fixture_index):
    from detkd.engine.evaluate import check_classes

    with pytest.raises(DetkdError, match=r"model.pth: model classes \['a', 'b'\] differ"):
        check_classes(_tiny(["a", "b"]), fixture_index, "model.pth")


# ---- the tools ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_bad_ckpt")
    generate_synthetic(root, seed=3, counts={"train": 4, "val": 2, "test": 0, "unlabeled": 0}, size=64, workers=1, progress=False)
    return root


def _tool(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def _assert_one_error_line(proc: subprocess.CompletedProcess[str], path: Path | str, *words: str) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0], proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def _export(config_root: Path, ckpt: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return _tool("tools/export.py", "configs/train/fyolo_synthetic.py", ckpt, "--out", out,
                 "--cfg-options", f"data.root={config_root}", "data.generate=None")


@pytest.mark.parametrize(("kind", "words"), [("random_bytes", ("not a PyTorch checkpoint",)),
                                             ("pickle", ("refused by the safe loader", "--trust"))])
def test_export_tool_on_a_bad_checkpoint(kind, words, tiny_data, tmp_path):
    path = tmp_path / "model.pth"
    if kind == "pickle":
        torch.save({"meta": {}, "state_dict": {}, "args": argparse.Namespace(lr=0.1)}, path)
    else:
        BAD_FILES[kind](path)
    digest = _sha(path)
    _assert_one_error_line(_export(tiny_data, path, tmp_path / "out" / "model.onnx"), path, *words)
    assert _sha(path) == digest and not (tmp_path / "out").exists()


def test_export_tool_refuses_a_checkpoint_with_other_classes(tiny_data, tmp_path):
    path = save_detector(_tiny(["x", "y"]), tmp_path / "other_classes.pth")
    digest = _sha(path)
    out = tmp_path / "out" / "model.onnx"
    _assert_one_error_line(_export(tiny_data, path, out), path, "model classes ['x', 'y'] differ from the data's")
    assert _sha(path) == digest and not out.parent.exists()  # refused before exporting anything


def _distill(data_root: Path, work_dir: Path, teacher: Path | str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _tool("tools/train_distill.py", "configs/distill/fyolo_synthetic.py", "--work-dir", work_dir,
                 "--teacher-ckpt", teacher, *extra, "--cfg-options", f"data.root={data_root}", "data.generate=None",
                 "imgsz=64", "model.width=0.125", "unlabeled.ratio=0", "train.epochs=1", "train.batch_size=2",
                 "train.num_workers=0")


def _pickled_pth(tmp_path: Path) -> Path:
    path = tmp_path / "teacher.pth"
    torch.save({"meta": {}, "state_dict": {}, "args": argparse.Namespace(lr=0.1)}, path)
    return path


def _pt(tmp_path: Path) -> Path:
    path = tmp_path / "best.pt"
    torch.save({"model": None}, path)
    return path


TEACHERS = {
    "pickled_pth": (_pickled_pth, ("refused by the safe loader", "--trust-teacher")),
    "untrusted_pt": (_pt, ("pickle", "--trust-teacher")),
    "model_yaml": (_model_yaml, ("random weights", "teacher.allow_untrained=True")),
    "data_yaml": (_data_yaml, ("is a dataset description (data.yaml), not a model",)),
}


@pytest.mark.parametrize("kind", list(TEACHERS))
def test_train_distill_tool_on_a_bad_teacher(kind, tiny_data, tmp_path):
    make, words = TEACHERS[kind]
    teacher = make(tmp_path)
    digest = _sha(teacher)
    _assert_one_error_line(_distill(tiny_data, tmp_path / "work", teacher), teacher, *words)
    assert _sha(teacher) == digest
    assert not list((tmp_path / "work").glob("*.pth"))


def test_model_label_names_the_model_and_its_width(tmp_path):
    assert model_label({"name": "ssd_cpu", "kwargs": {"width": 0.5, "imgsz": 320}}) == "ssd_cpu_w0.5"
    assert model_label({"name": "ssd300_vgg16", "kwargs": {}}) == "ssd300_vgg16"
    path = tmp_path / "tiny.pth"
    save_detector(_tiny(), path)
    assert checkpoint_model_label(path) == "fyolo_w0.125"
    again, copy = tmp_path / "again.pth", tmp_path / "copy.pth"  # the same spec trained again; the same file copied
    torch.manual_seed(1)
    save_detector(_tiny(), again)
    copy.write_bytes(path.read_bytes())
    label, other, same = (checkpoint_model_label(p, file_hash=True) for p in (path, again, copy))
    assert label.startswith("fyolo_w0.125@") and len(label) == len("fyolo_w0.125@") + 8
    assert label != other and label == same
    torch.save({"state_dict": {}}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="bare.pth: no detkd model spec"):
        checkpoint_model_label(tmp_path / "bare.pth")
