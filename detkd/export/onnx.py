"""ONNX export of a detector's raw outputs, verified against PyTorch with onnxruntime.

The exported graph is ``forward`` (input ``images`` Float[B, 3, imgsz, imgsz] in [0, 1], dynamic
batch); decoding and NMS stay in Python (the same ``decode`` serves both backends), which keeps
the graph portable and lets benchmarks time the network and the post-processing separately.
Export succeeds only when onnxruntime reproduces PyTorch's raw outputs and detections.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from detkd.binary.layers import has_binary_convs
from detkd.errors import DetkdError
from detkd.fileio import TEMP_SUFFIX, new_file_mode
from detkd.models.detector import DecodeConfig

__all__ = ["ExportError", "FlatOutputs", "ParityReport", "RuntimeDetector", "compare_outputs", "export_onnx", "flatten_outputs", "matched_detections", "ort_session", "run_onnx", "sample_images", "unflatten_outputs"]


class ExportError(DetkdError):
    """Export failed, or the exported model does not reproduce PyTorch."""


def flatten_outputs(outputs: Any) -> tuple[list[torch.Tensor], list[str]]:
    """Raw outputs (tensor, tuple/list or dict of tensors) → tensors and their names."""
    if torch.is_tensor(outputs):
        return [outputs], ["output"]
    if isinstance(outputs, dict):
        return list(outputs.values()), list(outputs.keys())
    return list(outputs), [f"output{i}" for i in range(len(outputs))]


def unflatten_outputs(tensors: list[torch.Tensor], names: list[str]) -> Any:
    """Inverse of :func:`flatten_outputs` (the structure ``decode`` expects)."""
    if names == ["output"]:
        return tensors[0]
    if all(n.startswith("output") for n in names):
        return tuple(tensors)
    return dict(zip(names, tensors, strict=True))


class RuntimeDetector(nn.Module):
    """A detector whose forward runs an exported file in an inference runtime (subclasses: ONNX Runtime,
    OpenVINO), so :func:`detkd.engine.evaluate.evaluate_model` measures it like any other detector.

    ``reference`` is the PyTorch model the file was exported from: its output structure (names, traced
    on a zero input of ``input_shape``), ``decode``, ``class_names`` and ``imgsz`` are used. It is not a
    submodule (its weights are not this model's); a zero-size parameter tells callers the device (CPU).
    """

    def __init__(self, reference: nn.Module, input_shape: list[int]) -> None:
        super().__init__()
        self.class_names = list(reference.class_names)
        self.num_classes = len(self.class_names)
        self.imgsz = int(reference.imgsz)
        reference = reference.eval()
        with torch.no_grad():
            self.output_names = flatten_outputs(reference(torch.zeros(input_shape)))[1]
        object.__setattr__(self, "reference", reference)
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def decode(self, outputs: Any, cfg: DecodeConfig | None = None) -> Any:
        return self.reference.decode(outputs, cfg) if cfg is not None else self.reference.decode(outputs)  # type: ignore[operator]


class FlatOutputs(nn.Module):
    """A detector whose outputs are a flat tuple of tensors (what the ONNX exporters trace)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.detector(images))[0])


def ort_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU onnxruntime session; ``threads`` sets intra-op threads (None: onnxruntime's default)."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, images: torch.Tensor, names: list[str]) -> Any:
    """Raw outputs of an exported detector, in PyTorch's structure."""
    outs = session.run(None, {"images": images.detach().cpu().numpy().astype(np.float32)})
    return unflatten_outputs([torch.from_numpy(o) for o in outs], names)


@dataclass
class ParityReport:
    max_abs_diff: float  # over all raw output values
    max_abs_value: float  # the largest raw output magnitude, for scale
    num_dets_torch: int
    num_dets_onnx: int
    max_box_diff: float  # pixels, over matched detections
    labels_equal: bool
    binary: bool = False  # the model has binary convs (sign() of its float simulation)
    unmatched: int = 0  # detections of either side with no same-class partner at IoU >= 0.9 on the other

    @property
    def ok(self) -> bool:
        """Raw outputs agree to 1e-4 of their scale. Decoding is the same Python code on both sides, so
        detections can differ only through the raw values; with near-tied scores (an untrained model)
        a 1e-6 difference reorders them, so for a float model the detection figures are reported, not
        gated on. A binarized model's sign() is a step: an activation within rounding of 0 (the runtime
        folds BatchNorm or orders sums differently) takes the other sign and moves the outputs by a
        finite amount, so it also passes when at most 5 % of the detections (at least one) lack a
        same-class partner at IoU >= 0.9 on the other side. Expected: BN outputs near N(0, 1) put about
        one activation in a million within 1e-6 of 0, and the binarized layers see about a million per
        image; a BCCD student in OpenVINO had 5 of 293 detections at score >= 0.01 without a partner. A
        wrong computation (padding, bit order, scaling) changes most of them."""
        raw = self.max_abs_diff <= 1e-4 * max(1.0, self.max_abs_value)
        allowed = max(1.0, 0.05 * max(self.num_dets_torch, self.num_dets_onnx))
        return raw or (self.binary and self.unmatched <= allowed)

    @property
    def detections_equal(self) -> bool:
        return self.num_dets_torch == self.num_dets_onnx and self.labels_equal and self.max_box_diff <= 0.5

    def __str__(self) -> str:
        return (f"raw max |diff| {self.max_abs_diff:.2e} (outputs up to {self.max_abs_value:.3g}); detections {self.num_dets_torch} (torch) vs "
                f"{self.num_dets_onnx} (runtime), {self.unmatched} without a partner; box max |diff| {self.max_box_diff:.3f} px; "
                f"labels equal: {self.labels_equal}")


def matched_detections(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], iou: float, corner_px: float) -> torch.Tensor:
    """``Bool[len(x)]``: which of one image's detections ``x`` (xyxy ``boxes``, ``labels``) have a
    same-class detection in ``y`` at IoU >= ``iou`` or with every corner within ``corner_px`` (which
    also matches tiny and zero-area boxes)."""
    from torchvision.ops import box_iou

    if not len(x["boxes"]) or not len(y["boxes"]):
        return torch.zeros(len(x["boxes"]), dtype=torch.bool)
    close = box_iou(x["boxes"].float(), y["boxes"].float()) >= iou
    close |= (x["boxes"][:, None, :] - y["boxes"][None, :, :]).abs().amax(dim=-1) <= corner_px
    return (close & (x["labels"][:, None] == y["labels"][None, :])).any(dim=1)


def _unmatched(dets_a: list[dict[str, torch.Tensor]], dets_b: list[dict[str, torch.Tensor]]) -> int:
    """Detections of either list (per image) with no partner in the other: same class, and IoU >= 0.9 or
    every corner within 0.5 px."""
    return sum(int((~matched_detections(x, y, 0.9, 0.5)).sum()) for a, b in zip(dets_a, dets_b, strict=True)
               for x, y in ((a, b), (b, a)))


def _parity(detector: nn.Module, session: ort.InferenceSession, images: torch.Tensor, names: list[str]) -> ParityReport:
    with torch.no_grad():
        ours = detector(images)
    return compare_outputs(detector, ours, run_onnx(session, images, names))


def compare_outputs(detector: nn.Module, ours: Any, theirs: Any) -> ParityReport:
    """``detector``'s raw outputs (PyTorch) against a runtime's on the same images: raw differences and
    the detections both decode to (the parity gate of every export)."""
    diffs = [float((a - b).abs().max()) for a, b in zip(flatten_outputs(ours)[0], flatten_outputs(theirs)[0], strict=True)]
    scale = max(float(t.abs().max()) for t in flatten_outputs(ours)[0])
    cfg = DecodeConfig(score_thr=0.01)  # what a user would see, not the 0.001 long tail
    dets_a, dets_b = detector.decode(ours, cfg), detector.decode(theirs, cfg)
    count_a, count_b = sum(len(d["scores"]) for d in dets_a), sum(len(d["scores"]) for d in dets_b)
    box_diff, labels_equal = 0.0, count_a == count_b
    if labels_equal:
        for a, b in zip(dets_a, dets_b, strict=True):
            if len(a["boxes"]):
                box_diff = max(box_diff, float((a["boxes"] - b["boxes"]).abs().max()))
                labels_equal &= bool(torch.equal(a["labels"], b["labels"]))
    return ParityReport(max(diffs), scale, count_a, count_b, box_diff, labels_equal, binary=has_binary_convs(detector),
                        unmatched=_unmatched(dets_a, dets_b))


def export_onnx(detector: nn.Module, out: str | os.PathLike[str], imgsz: int | None = None, opset: int = 17,
                check_images: torch.Tensor | None = None) -> ParityReport:
    """Export ``detector`` to ``out`` (written atomically) and verify it with onnxruntime.

    Args:
        imgsz: input size (default ``detector.imgsz``).
        check_images: Float[B, 3, imgsz, imgsz] in [0, 1] used for the parity check (default:
            two seeded random images; pass real ones for a meaningful detection comparison).

    Raises:
        ExportError: the graph does not export, fails ``onnx.checker``, or does not reproduce PyTorch.
    """
    detector = detector.eval()
    imgsz = int(imgsz or detector.imgsz)
    if check_images is None:
        check_images = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        names = flatten_outputs(detector(check_images[:1]))[1]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent)
    os.fchmod(fd, new_file_mode())  # the umask's permissions, not mkstemp's 0600
    os.close(fd)
    try:
        # .eval() on the wrapper too: export restores the wrapper's own training flag afterwards,
        # and a fresh module starts in training mode, which would switch the detector's BN to batch stats.
        with warnings.catch_warnings():  # the TorchScript exporter's notes are not the user's business
            warnings.simplefilter("ignore")
            torch.onnx.export(
                FlatOutputs(detector).eval(), (check_images[:1],), tmp, input_names=["images"], output_names=names,
                opset_version=opset, dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}}, dynamo=False,
            )
        onnx.checker.check_model(onnx.load(tmp))
        report = _parity(detector, ort_session(tmp), check_images, names)
        if not report.ok:
            raise ExportError(f"onnxruntime does not reproduce PyTorch: {report}")
        os.replace(tmp, out)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(exc, Exception):  # Ctrl-C: nothing left behind, and no error message
            raise
        raise exc if isinstance(exc, ExportError) else ExportError(f"export to {out} failed: {exc}") from exc
    return report


def sample_images(index: Any, imgsz: int, count: int = 4) -> torch.Tensor:
    """Float[count, 3, imgsz, imgsz] in [0, 1]: the first letterboxed images of a dataset index."""
    from detkd.data.dataset import DetectionDataset
    from detkd.data.transforms import build_eval_transform

    dataset = DetectionDataset(index, build_eval_transform(imgsz))
    return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))]).float() / 255.0
