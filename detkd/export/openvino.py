"""Deploying binarized detectors: OpenVINO IR whose binary convs run on OpenVINO's CPU BinaryConvolution.

ONNX Runtime has no binary convolution, and running detkd's packed kernel from PyTorch eager costs
more per-op overhead than the kernel saves (README, binarization). OpenVINO's CPU plugin has a
``BinaryConvolution`` kernel (XNOR + popcount on bit-packed data, vectorised for the CPU it runs on)
and runs the float parts of the network too, so the whole model runs in one inference runtime.

The route: :func:`export_binary_ir` exports the model to ONNX with each
:class:`~detkd.binary.layers.BinaryConv2d` as one custom node ``detkd::BinaryConv2d`` (input, weight
sign bits, ``alpha``, bias; kernel, stride, padding, dilation); OpenVINO's ONNX frontend turns each
such node into standard OpenVINO operations (:func:`_convert_binary_conv`), and the result is saved
as OpenVINO IR (``.xml`` + ``.bin``; weights of the binary convs stored as 1 bit each), which any
OpenVINO runtime loads without detkd. Per binary conv the IR computes exactly the float simulation:

- ``bits = x >= 0`` as 0/1 (OpenVINO's xnor-popcount reads 0 as -1 and 1 as +1), then
  ``BinaryConvolution(bits, sign bits of W, pad_value=+1)``;
- minus a constant correction: the simulation pads ``sign(x)`` with zeros, OpenVINO pads with +1, so
  ``conv(pad mask, sign W)`` is subtracted (a constant for the fixed input size). Input channels are
  padded to a multiple of 8 with +1 inputs and +1 weights (the CPU kernel reads whole bytes of
  channels; measured wrong results otherwise), and their constant contribution is in the same
  correction;
- XNOR mode: times ``K`` (the box filter of ``mean_c |x|``) and ``alpha`` per filter; plus the bias.

Weight bits are packed least significant bit first into OpenVINO's ``u1`` constants (the CPU plugin
reads them that way relative to its input bits; tested against the float simulation).
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from detkd.binary.layers import BinaryConv2d, has_binary_convs, replace_module, xnor_input_scale
from detkd.export.onnx import (ExportError, FlatOutputs, ParityReport, RuntimeDetector, compare_outputs, flatten_outputs,
                               unflatten_outputs)

__all__ = ["OpenVINODetector", "compile_ir", "export_binary_ir", "openvino_core"]

DOMAIN, OP = "detkd", "BinaryConv2d"


class _BinaryConvOp(torch.autograd.Function):
    """The float simulation of a binary conv when traced; one ``detkd::BinaryConv2d`` node when exported."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bits: torch.Tensor, alpha: torch.Tensor, bias: torch.Tensor, kernel: tuple[int, int],
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], xnor: bool) -> torch.Tensor:
        signs = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        out = F.conv2d(signs, bits * 2 - 1, None, stride, padding, dilation)
        if xnor:
            out = out * xnor_input_scale(x, kernel, stride, padding, dilation) * alpha.view(1, -1, 1, 1)
        return out + bias.view(1, -1, 1, 1)

    @staticmethod
    def symbolic(g: Any, x: Any, bits: Any, alpha: Any, bias: Any, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], xnor: bool) -> Any:
        return g.op(f"{DOMAIN}::{OP}", x, bits, alpha, bias, kernel_shape_i=list(kernel), strides_i=list(stride),
                    pads_i=list(padding), dilations_i=list(dilation), xnor_i=int(xnor))


class _ExportBinaryConv(nn.Module):
    """A :class:`BinaryConv2d` (``binarize_input=True``) as the exporter sees it."""

    def __init__(self, conv: BinaryConv2d) -> None:
        super().__init__()
        if not conv.binarize_input:
            raise ExportError("OpenVINO's binary convolution needs binary inputs (binarize_input=True)")
        self.geometry = (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation))
        self.xnor = conv.mode == "xnor"
        self.register_buffer("bits", (conv.weight.detach() >= 0).float())
        ones = torch.ones(conv.out_channels)
        self.register_buffer("alpha", conv.alpha().detach().float() if self.xnor else ones)
        self.register_buffer("bias", conv.bias.detach().float() if conv.bias is not None else ones * 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _BinaryConvOp.apply(x, self.bits, self.alpha, self.bias, *self.geometry, self.xnor)


def _convert_binary_conv(node: Any) -> list[Any]:
    """OpenVINO ONNX-frontend converter of one ``detkd::BinaryConv2d`` node (see the module docstring)."""
    import openvino as ov
    from openvino import opset8 as ops

    x, alpha, bias = node.get_input(0), node.get_input(2), node.get_input(3)
    bits = np.array(node.get_input(1).get_node().get_data()).astype(np.uint8)
    kernel, stride, pad, dilation = (list(node.get_attribute(a)) for a in ("kernel_shape", "strides", "pads", "dilations"))
    xnor = bool(node.get_attribute("xnor"))
    out_channels, channels = bits.shape[:2]
    height, width = (x.get_partial_shape()[i].get_length() for i in (2, 3))
    extra = (-channels) % 8
    binary = ops.convert(ops.greater_equal(x, ops.constant(np.float32(0.0))), "f32")
    if extra:  # +1 inputs (1 bits) read by +1 weights: a constant contribution, removed below
        first = ops.slice(binary, np.int64([0]), np.int64([1]), np.int64([1]), np.int64([1]))
        ones = ops.add(ops.multiply(first, ops.constant(np.float32(0.0))), ops.constant(np.float32(1.0)))
        binary = ops.concat([binary, ops.tile(ones, ops.constant(np.int64([1, extra, 1, 1])))], 1)
        bits = np.concatenate([bits, np.ones((out_channels, extra, *bits.shape[2:]), np.uint8)], axis=1)
    weights = ov.Tensor(ov.Type.u1, ov.Shape(list(bits.shape)))
    weights.data[:] = np.packbits(bits.reshape(-1), bitorder="little")
    out = ov.opset1.binary_convolution(binary, ov.op.Constant(weights), stride, pad, pad, dilation, "xnor-popcount", 1.0)
    mask = np.ones((1, channels + extra, height + 2 * pad[0], width + 2 * pad[1]), np.float32)
    mask[:, :channels, pad[0]:pad[0] + height, pad[1]:pad[1] + width] = 0.0  # where OpenVINO adds +1 and we add 0
    signs = torch.from_numpy(bits.astype(np.float32) * 2 - 1)
    correction = F.conv2d(torch.from_numpy(mask), signs, stride=stride, dilation=dilation).numpy()
    out = ops.subtract(out, ops.constant(correction))
    per_filter = ops.constant(np.int64([1, -1, 1, 1]))
    if xnor:
        magnitude = ops.reduce_mean(ops.abs(x), ops.constant(np.int64([1])), keep_dims=True)
        if dilation == [1, 1]:
            scale = ops.avg_pool(magnitude, stride, pad, pad, kernel, exclude_pad=False)
        else:
            box = np.full((1, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), np.float32)
            scale = ops.convolution(magnitude, ops.constant(box), stride, pad, pad, dilation)
        out = ops.multiply(ops.multiply(out, scale), ops.reshape(alpha, per_filter, False))
    out = ops.add(out, ops.reshape(bias, per_filter, False))
    return [out.output(0)]


def openvino_core() -> Any:
    """An ``openvino.Core`` that reads detkd's binary-conv ONNX nodes."""
    import openvino as ov
    from openvino.frontend.onnx import ConversionExtension

    core = ov.Core()
    core.add_extension(ConversionExtension(OP, DOMAIN, _convert_binary_conv))
    return core


def cpu_config(threads: int | None = None) -> dict[str, Any]:
    """OpenVINO CPU settings for every detkd model: latency hint, ``threads`` inference threads, and float32
    inference. OpenVINO runs in bfloat16 by default on CPUs with AVX512_BF16 or AMX; there its
    BinaryConvolution has no bf16 input layout ("could not create reorder primitive", OpenVINO 2026.4 on an
    AMD EPYC with avx512_bf16), and bf16 would also leave the float-simulation parity the export checks."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def compile_ir(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An OpenVINO compiled model (CPU, ``cpu_config(threads)``) of an IR ``.xml`` or an ONNX file."""
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", cpu_config(threads))


class OpenVINODetector(RuntimeDetector):
    """A detector whose forward runs an OpenVINO IR on the CPU (fixed batch 1, so a batch runs image by
    image). Input ``Float[B, 3, S, S]`` in [0, 1]."""

    def __init__(self, path: str | os.PathLike[str], reference: nn.Module, threads: int | None = None) -> None:
        compiled = compile_ir(path, threads)
        super().__init__(reference, [int(d) for d in compiled.inputs[0].get_shape()])
        self.path = Path(path)
        self.compiled = compiled

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """The raw outputs for ``Float[1, 3, S, S]`` (the IR has a fixed batch of 1)."""
        result = self.compiled(images)
        return [result[i] for i in range(len(self.output_names))]

    def forward(self, images: torch.Tensor) -> Any:
        batch = [self.run(images[i:i + 1].cpu().numpy().astype(np.float32)) for i in range(images.shape[0])]
        stacked = [torch.from_numpy(np.concatenate([b[k] for b in batch])) for k in range(len(self.output_names))]
        return unflatten_outputs(stacked, self.output_names)


def export_binary_ir(model: nn.Module, out: str | os.PathLike[str], imgsz: int | None = None,
                     check_images: torch.Tensor | None = None, opset: int = 17) -> ParityReport:
    """Write ``out`` (``.xml``, with its ``.bin`` beside it): ``model`` with every binary conv on
    OpenVINO's BinaryConvolution, the rest float, batch 1 at ``imgsz``; verified against the float
    simulation on ``check_images`` (raw outputs and detections) before it is kept.

    Raises:
        ExportError: the model has no binary convs, the export or conversion failed, or the IR does not
            reproduce the simulation; nothing is left behind.
    """
    import openvino as ov

    model = model.eval()
    if not has_binary_convs(model):
        raise ExportError("the model has no binary convs (model.binary): export it with tools/export.py without --binary")
    size = int(imgsz or model.imgsz)
    if check_images is None:
        check_images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    if out.suffix != ".xml":
        raise ExportError(f"{out}: an OpenVINO IR is written as a .xml file (with its .bin beside it)")
    exported = copy.deepcopy(model).cpu()
    for name, module in list(exported.named_modules()):
        if isinstance(module, BinaryConv2d):
            replace_module(exported, name, _ExportBinaryConv(module))
    with torch.no_grad():
        names = flatten_outputs(model(check_images[:1]))[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as work:
        onnx_path, xml = Path(work) / "model.onnx", Path(work) / out.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(FlatOutputs(exported).eval(), (check_images[:1],), str(onnx_path), input_names=["images"],
                                  output_names=names, opset_version=opset, custom_opsets={DOMAIN: 1}, dynamo=False)
            ov.save_model(openvino_core().read_model(str(onnx_path)), str(xml), compress_to_fp16=False)
            parity = _parity(model, xml, check_images)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"OpenVINO export to {out} failed: {exc}") from exc
        if not parity.ok:
            raise ExportError(f"the OpenVINO model does not reproduce the float simulation: {parity}")
        os.replace(xml.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(xml, out)
    return parity


def _parity(model: nn.Module, xml: Path, images: torch.Tensor) -> ParityReport:
    deployed = OpenVINODetector(xml, model)
    with torch.no_grad():
        return compare_outputs(model, model(images), deployed(images))
