"""ultralytics adapter: raw outputs in both modes, decode, .pt trust, offline and config isolation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from detkd.models.detector import DecodeConfig
from detkd.models.factory import build_model
from detkd.errors import CheckpointError
from detkd.models.ultralytics_adapter import (
    UltralyticsDetector,
    load_ultralytics,
    restore_ultralytics_checkpoint,
    save_ultralytics_weights,
)

CLASSES = ["cat", "dog", "person"]
IMGSZ = 64


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any test in which something tries to reach the network (DNS, connect)."""
    attempts: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture
def yolov8n() -> UltralyticsDetector:
    torch.manual_seed(0)
    return load_ultralytics("yolov8n.yaml", CLASSES, imgsz=IMGSZ)


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))


def test_forward_is_decoded_and_identical_in_train_and_eval(yolov8n: UltralyticsDetector) -> None:
    x = _images()
    train_out = yolov8n.train()(x)
    eval_out = yolov8n.eval()(x)
    n = (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2
    assert train_out.shape == (2, 4 + len(CLASSES), n)
    torch.testing.assert_close(train_out, eval_out, rtol=0, atol=0)
    assert ((eval_out[:, 4:] >= 0) & (eval_out[:, 4:] <= 1)).all()  # sigmoid scores
    assert (eval_out[:, 2:4] >= 0).all()  # widths and heights
    # the same as ultralytics' own decoded inference output of this (non end-to-end) head
    with torch.no_grad():
        torch.testing.assert_close(yolov8n.model(x)[0], eval_out.detach())


def test_anchor_points_follow_the_output_order(yolov8n: UltralyticsDetector) -> None:
    points, strides = yolov8n.anchor_points()
    n = yolov8n(_images(1)).shape[-1]
    assert points.shape == (n, 2) and strides.shape == (n,)
    assert points[0].tolist() == [4.0, 4.0] and points[1].tolist() == [12.0, 4.0]  # row-major, stride 8
    assert strides.unique().tolist() == [8.0, 16.0, 32.0]


def test_decode_is_well_formed(yolov8n: UltralyticsDetector) -> None:
    with torch.no_grad():
        dets = yolov8n.decode(yolov8n(_images()), DecodeConfig(score_thr=0.0, max_det=20))
    assert len(dets) == 2
    for det in dets:
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        assert 0 < len(scores) <= 20 and boxes.shape == (len(scores), 4) and labels.shape == scores.shape
        assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() < len(CLASSES)
        assert (boxes >= 0).all() and (boxes <= IMGSZ).all() and (boxes[:, 2:] >= boxes[:, :2]).all()


def test_decode_turns_center_boxes_into_xyxy_with_our_labels(yolov8n: UltralyticsDetector) -> None:
    outputs = torch.zeros(1, 4 + len(CLASSES), 5)
    outputs[0, :4, 2] = torch.tensor([30.0, 20.0, 10.0, 8.0])  # cx, cy, w, h
    outputs[0, 4 + 1, 2] = 0.9  # class 1
    (det,) = yolov8n.decode(outputs, DecodeConfig(score_thr=0.5))
    assert det["labels"].tolist() == [1]
    torch.testing.assert_close(det["boxes"], torch.tensor([[25.0, 16.0, 35.0, 24.0]]))


def test_end_to_end_heads_offer_both_branches() -> None:
    torch.manual_seed(0)
    x = _images(1)
    model = load_ultralytics("yolo26n.yaml", CLASSES, imgsz=IMGSZ)
    with torch.no_grad():  # the NMS-free branch starts as a copy of the dense one: make them differ
        model.head.one2one_cv3[0][-1].bias += 1.0
        auto = model(x)
        model.branch = "one2many"
        dense = model(x)
        model.branch = "one2one"
        nms_free = model(x)
        model.branch = "auto"
        model.head.end2end = True  # what ultralytics sets for NMS-free inference (nms=False)
        auto_e2e = model(x)
    assert dense.shape == nms_free.shape == (1, 4 + len(CLASSES), 84)
    assert torch.equal(auto, dense) and torch.equal(auto_e2e, nms_free)
    assert not torch.equal(dense[:, 4:], nms_free[:, 4:])


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.filterwarnings("ignore:The feature will be removed")
def test_onnx_export_gives_the_decoded_tensor(yolov8n: UltralyticsDetector, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    x = _images(1)
    path = tmp_path / "yolo.onnx"
    torch.onnx.export(yolov8n, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"images": x.numpy()})
    assert len(outputs) == 1
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(outputs[0]), yolov8n(x), rtol=1e-3, atol=1e-3)


def test_loss_is_left_to_ultralytics(yolov8n: UltralyticsDetector) -> None:
    with pytest.raises(NotImplementedError, match="ultralytics' own trainer"):
        yolov8n.loss(yolov8n(_images(1)), [])


def test_build_model_records_the_spec() -> None:
    model = build_model("ultralytics", model="yolov8n.yaml", class_names=CLASSES, imgsz=IMGSZ)
    assert isinstance(model, UltralyticsDetector) and model.class_names == CLASSES and model.imgsz == IMGSZ
    assert model.detkd_spec["name"] == "ultralytics"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"path_or_yaml": "yolov8n.yaml"}, ValueError, "class_names"),
        ({"path_or_yaml": "yolov8n.yaml", "class_names": CLASSES, "imgsz": 100}, ValueError, "multiple of 32"),
        ({"path_or_yaml": "weights.onnx", "class_names": CLASSES}, ValueError, ".yaml or .pt"),
    ],
)
def test_bad_arguments_are_explained(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load_ultralytics(**kwargs)


# ---- .pt checkpoints ----------------------------------------------------------------------------
@pytest.fixture
def checkpoint(yolov8n: UltralyticsDetector, tmp_path: Path) -> Path:
    path = tmp_path / "tiny_yolo.pt"
    torch.save({"model": yolov8n.model, "train_args": {"imgsz": IMGSZ}}, path)  # ultralytics' layout
    return path


def test_pt_is_refused_without_trust(checkpoint: Path) -> None:
    with pytest.raises(PermissionError, match="trust=True"):
        load_ultralytics(str(checkpoint), imgsz=IMGSZ)


def test_trusted_pt_loads_with_its_class_names(yolov8n: UltralyticsDetector, checkpoint: Path) -> None:
    loaded = load_ultralytics(str(checkpoint), imgsz=IMGSZ, trust=True)
    assert loaded.class_names == CLASSES
    x = _images(1)
    torch.testing.assert_close(loaded(x), yolov8n(x))
    assert load_ultralytics(str(checkpoint), CLASSES, imgsz=IMGSZ, trust=True).class_names == CLASSES
    with pytest.raises(ValueError, match="trained on classes"):
        load_ultralytics(str(checkpoint), ["a", "b", "c"], imgsz=IMGSZ, trust=True)


def test_missing_pt_is_not_downloaded(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="yolo_missing.pt"):
        load_ultralytics(str(tmp_path / "yolo_missing.pt"), trust=True)


# ---- process environment ------------------------------------------------------------------------
def test_import_is_lazy_and_nothing_is_written_to_the_home_config(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for key in ("YOLO_CONFIG_DIR", "DETKD_CACHE"):
        env.pop(key, None)
    code = (
        "import sys, torch\n"
        "import detkd.models.ultralytics_adapter as ua\n"
        "assert 'ultralytics' not in sys.modules, 'imported at module import'\n"
        "m = ua.load_ultralytics('yolov8n.yaml', ['a', 'b'], imgsz=64)\n"
        "assert m(torch.rand(1, 3, 64, 64)).shape == (1, 6, 84)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True, timeout=120)
    assert not (tmp_path / ".config").exists()
    settings = tmp_path / "cache" / "detkd" / "ultralytics" / "Ultralytics" / "settings.json"
    assert json.loads(settings.read_text())["sync"] is False


def test_kept_weights_load_without_unpickling_code_and_restore_the_same_model(
    yolov8n: UltralyticsDetector, checkpoint: Path, tmp_path: Path
) -> None:
    kept = save_ultralytics_weights(checkpoint, tmp_path / "kept.pth", trust=True)
    record = torch.load(kept, weights_only=True)  # plain data: no class is unpickled
    assert record["format"] == "detkd.ultralytics_weights/1" and record["names"] == CLASSES
    assert all(v.dtype != torch.float32 for v in record["state_dict"].values())  # fp16 like ultralytics' own .pt
    restored = restore_ultralytics_checkpoint(kept, tmp_path / "run" / "weights" / "best.pt")
    loaded = load_ultralytics(str(restored), imgsz=IMGSZ, trust=True)
    assert loaded.class_names == CLASSES
    x = _images(1)
    half = load_ultralytics(str(checkpoint), imgsz=IMGSZ, trust=True)  # the original, through ultralytics' loader
    reference = half.model.half().float()  # the kept tensors are fp16: compare with the fp16-rounded original
    torch.testing.assert_close(loaded(x), UltralyticsDetector(reference, CLASSES, IMGSZ)(x))


def test_kept_weights_need_trust_for_the_pt_and_refuse_other_files(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(PermissionError, match="trust=True"):
        save_ultralytics_weights(checkpoint, tmp_path / "kept.pth")
    assert not (tmp_path / "kept.pth").exists()
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="other.pth: not a kept ultralytics weights file"):
        restore_ultralytics_checkpoint(other, tmp_path / "best.pt")
    assert not (tmp_path / "best.pt").exists()
