"""INT8 reference: a float ONNX detector quantized by ONNX Runtime's static quantization.

:func:`quantize_int8` takes the float graph that :func:`detkd.export.onnx.export_onnx` wrote and
verified, runs ONNX Runtime's pre-processing (shape inference, graph optimisation), calibrates the
activation ranges on real letterboxed images (min/max over the calibration set) and writes a QDQ
model: int8 weights per output channel (``per_channel``), uint8 activations. The stem (the conv that
reads the image) stays float by default (``keep_stem_float``): on three BCCD students every conv in INT8
lost 10.7, 0.3 and 3.8 mAP50 points, the stem kept float recovered each fully, and no other single conv
kept float nor another calibration method (percentile, entropy) changed the loss
(``benchmarks/diagnostics/diagnose_int8.py``); at 3 input channels it is a small part of the time. ONNX Runtime's CPU
provider fuses the QDQ pairs into integer convolutions (VNNI where the CPU has it). The output
names and shapes are the float graph's, so decoding and NMS are unchanged; :func:`int8_parity`
says how far its raw outputs and its detections drift from the float model's.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from detkd.export.onnx import ExportError, RuntimeDetector
from detkd.fileio import TEMP_SUFFIX, new_file_mode

__all__ = ["CALIBRATION_METHODS", "Int8Parity", "OnnxRuntimeDetector", "int8_parity", "quantize_int8", "stem_convs"]


class _Images:
    """ONNX Runtime's ``CalibrationDataReader`` over a ``Float[N, 3, S, S]`` tensor, one image per call."""

    def __init__(self, images: torch.Tensor, input_name: str = "images") -> None:
        self.batches = [{input_name: images[i:i + 1].numpy().astype(np.float32)} for i in range(len(images))]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def stem_convs(model: Any) -> list[str]:
    """The name of the first Conv node of an ONNX ``model`` (nodes are in topological order: the conv
    that reads the image, after any input normalisation), as a one-item list; empty without a Conv."""
    return next(([node.name] for node in model.graph.node if node.op_type == "Conv"), [])


_CALIBRATION = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}  # onnxruntime's CalibrationMethod
CALIBRATION_METHODS = tuple(_CALIBRATION)


def quantize_int8(float_onnx: str | os.PathLike[str], out: str | os.PathLike[str], calibration: torch.Tensor,
                  per_channel: bool = True, keep_stem_float: bool = True, keep_float: Sequence[str] = (),
                  calibration_method: str = "minmax") -> Path:
    """Write ``out``: ``float_onnx`` statically quantized (QDQ, int8 weights, uint8 activations), its
    activation ranges calibrated on ``calibration`` (``Float[N, 3, S, S]`` in [0, 1]) by
    ``calibration_method`` (one of :data:`CALIBRATION_METHODS`), atomically. With ``keep_stem_float``
    the first conv (the one that reads the image) stays float (see the module docstring); ``keep_float``
    names more ONNX nodes that stay float.

    Raises:
        ExportError: quantization failed (the message names the float model); nothing is written.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(calibration) == 0:
        raise ExportError(f"{float_onnx}: no calibration images for the INT8 model")
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method {calibration_method!r}: expected one of {CALIBRATION_METHODS}")
    method = getattr(CalibrationMethod, _CALIBRATION[calibration_method])
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent)
    os.fchmod(fd, new_file_mode())
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = Path(work) / "prepared.onnx"
            quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
            keep = [*(stem_convs(onnx.load(str(prepared))) if keep_stem_float else []), *keep_float]
            quantize_static(str(prepared), tmp, _Images(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, nodes_to_exclude=keep)
        os.replace(tmp, out)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(exc, Exception):
            raise
        raise ExportError(f"INT8 quantization of {float_onnx} failed: {exc}") from exc
    return out


@dataclass
class Int8Parity:
    """How the INT8 model's outputs compare with the float model's on the same images.

    ``relative_error``: ``||int8 - float|| / ||float||`` over all raw outputs; ``matched``: float
    detections (score >= ``score``) that the INT8 model also finds (same class, and IoU >= 0.5 or
    every corner within 2 % of the input size, which also matches tiny boxes), out of ``detections``."""

    relative_error: float
    matched: int
    detections: int

    @property
    def match_rate(self) -> float:
        return self.matched / self.detections if self.detections else 1.0

    def __str__(self) -> str:
        return (f"raw outputs within {100 * self.relative_error:.1f} % of float; {self.matched}/{self.detections} "
                f"float detections found again")


def int8_parity(detector: nn.Module, int8_onnx: str | os.PathLike[str], images: torch.Tensor, threads: int | None = None,
                score: float = 0.3) -> Int8Parity:
    """Compare the INT8 graph with ``detector`` (float, PyTorch) on ``images`` ``Float[B, 3, S, S]``."""
    from detkd.export.onnx import flatten_outputs, matched_detections, ort_session, run_onnx

    detector = detector.eval()
    with torch.no_grad():
        ref = detector(images)
    ref_flat, names = flatten_outputs(ref)
    got: Any = run_onnx(ort_session(int8_onnx, threads), images, names)
    got_flat, _ = flatten_outputs(got)
    diff = sum(float((g.float() - r.float()).pow(2).sum()) for g, r in zip(got_flat, ref_flat, strict=True))
    norm = sum(float(r.float().pow(2).sum()) for r in ref_flat)
    matched = total = 0
    for want, have in zip(detector.decode(ref), detector.decode(got), strict=True):
        keep = want["scores"] >= score
        wanted = {"boxes": want["boxes"][keep], "labels": want["labels"][keep]}
        total += len(wanted["boxes"])
        matched += int(matched_detections(wanted, have, 0.5, 0.02 * images.shape[-1]).sum())
    return Int8Parity((diff / max(norm, 1e-12)) ** 0.5, matched, total)


class OnnxRuntimeDetector(RuntimeDetector):
    """A detector whose forward runs an ONNX file in ONNX Runtime (CPU), e.g. the INT8 model (outputs keep
    their names and shapes through quantization). Input ``Float[B, 3, S, S]`` in [0, 1]."""

    def __init__(self, path: str | os.PathLike[str], reference: nn.Module, threads: int | None = None) -> None:
        from detkd.export.onnx import ort_session

        super().__init__(reference, [1, 3, int(reference.imgsz), int(reference.imgsz)])
        self.path = Path(path)
        self.session = ort_session(self.path, threads)

    def forward(self, images: torch.Tensor) -> Any:
        from detkd.export.onnx import run_onnx

        return run_onnx(self.session, images.cpu(), self.output_names)
