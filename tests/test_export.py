"""ONNX export of every detector family reproduces PyTorch's raw outputs and detections."""

from __future__ import annotations

import pytest
import torch

from detkd.export.onnx import ExportError, compare_outputs, export_onnx
from detkd.models.factory import build_model

CLASSES = ["a", "b", "c"]
MODELS = [
    ("yolov2", dict(width=0.125), 64),
    ("tiny_yolov2", dict(width=0.125), 64),
    ("fyolo", dict(width=0.125), 64),
    ("ssd_cpu", dict(width=0.125), 96),
    ("ultralytics", dict(model="yolov8n.yaml"), 64),
]


def _randomise(model: torch.nn.Module) -> None:
    """Random weights and BN statistics, so the comparison covers many confident detections."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen) * 0.3
                tensor.copy_(noise.abs() + 0.5 if "running_var" in name else noise)


@pytest.mark.parametrize(("name", "kwargs", "imgsz"), MODELS, ids=[m[0] for m in MODELS])
def test_export_matches_pytorch(name, kwargs, imgsz, tmp_path):
    model = build_model(name, class_names=CLASSES, imgsz=imgsz, **kwargs)
    _randomise(model)
    images = torch.rand(3, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    report = export_onnx(model, tmp_path / f"{name}.onnx", check_images=images)
    assert report.ok and report.detections_equal and report.num_dets_torch > 0, str(report)
    assert report.max_abs_diff < 1e-5 * max(1.0, report.max_abs_value)  # float32 round-off only
    assert not model.training or name == "ultralytics"  # export leaves the model in eval mode


def test_binary_models_pass_the_parity_gate_on_matching_detections():
    """A binarized model's sign() may flip for an activation within rounding of 0 in another runtime: its
    raw outputs then move by a finite step. Its gate accepts that while at most 5 % of the detections
    (at least one) lose their partner; a float model's gate does not, and neither accepts more."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for binary in (None, dict(mode="xnor")):
        model = build_model("fyolo", class_names=CLASSES, imgsz=64, width=0.125, binary=binary).eval()
        _randomise(model)
        with torch.no_grad():
            ours = model(images)  # [B, A, H, W, 5 + C]
        ours[:, 0, 0, 0, 4] = -30.0  # anchor 0 of cell (0, 0) is no detection (objectness ~1e-13)...
        moved = ours.clone()
        moved[:, 0, 0, 0, 0] += 0.05  # ...so moving its box changes raw outputs, not detections
        report = compare_outputs(model, ours, moved)
        assert report.binary == (binary is not None) and report.detections_equal and report.unmatched == 0
        assert report.max_abs_diff == pytest.approx(0.05) and report.ok == (binary is not None), str(report)
        one = ours.clone()
        one[0, ..., 4] = torch.where(one[0, ..., 4] == one[0, ..., 4].max(), -30.0, one[0, ..., 4])  # image 0 loses its best slot
        report = compare_outputs(model, ours, one)
        assert 1 <= report.unmatched <= len(CLASSES) and report.num_dets_torch > report.num_dets_onnx
        assert report.ok == (binary is not None and report.unmatched <= max(1, 0.05 * report.num_dets_torch)), str(report)
        lost = ours.clone()
        lost[..., 4] = -30.0  # every detection gone
        report = compare_outputs(model, ours, lost)
        assert report.unmatched == report.num_dets_torch > 1 and not report.ok


def test_failed_export_writes_nothing(tmp_path):
    class Broken(torch.nn.Module):
        imgsz = 32

        def forward(self, x):
            return torch.nonzero(x > 2.0)  # data-dependent output: exported, but decode cannot work

        def decode(self, outputs, cfg=None):
            raise ValueError("cannot decode")

    with pytest.raises(ExportError):
        export_onnx(Broken(), tmp_path / "broken.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "kwargs", "imgsz"), [MODELS[2], MODELS[3]], ids=["fyolo", "ssd_cpu"])
def test_int8_export_runs_in_onnxruntime_close_to_float(name, kwargs, imgsz, tmp_path):
    import onnx

    from detkd.export.int8 import int8_parity, quantize_int8, stem_convs

    model = build_model(name, class_names=CLASSES, imgsz=imgsz, **kwargs)
    _randomise(model)
    gen = torch.Generator().manual_seed(1)
    calibration, images = torch.rand(16, 3, imgsz, imgsz, generator=gen), torch.rand(3, 3, imgsz, imgsz, generator=gen)
    export_onnx(model, tmp_path / "float.onnx", check_images=images)
    out = quantize_int8(tmp_path / "float.onnx", tmp_path / "model.int8.onnx", calibration)
    graph = onnx.load(out).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # a QDQ graph: int8 weights, uint8 activations
    (stem,) = stem_convs(onnx.load(tmp_path / "float.onnx"))
    stem_node = next(node for node in graph.node if node.name == stem)
    quantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    assert stem_node.input[0] not in quantized and stem_node.input[1] not in quantized  # float image, float weights
    assert sum(node.op_type == "Conv" and node.input[1] in quantized for node in graph.node) >= 3  # the rest: int8
    assert out.stat().st_size < 0.5 * (tmp_path / "float.onnx").stat().st_size
    parity = int8_parity(model, out, images)
    assert parity.relative_error < 0.1, str(parity)
    assert parity.detections > 0 and parity.match_rate >= 0.8, str(parity)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.onnx", "model.int8.onnx"]  # no temp file left
    with pytest.raises(ValueError, match="calibration_method 'kl'"):
        quantize_int8(tmp_path / "float.onnx", tmp_path / "other.int8.onnx", calibration, calibration_method="kl")
    assert not (tmp_path / "other.int8.onnx").exists()
