"""Deploying binarized models: bit-packed checkpoints and the XNOR/popcount inference path.

- :class:`PackedBinaryConv2d` — inference twin of :class:`~detkd.models.binary.BinaryConv2d`: the sign
  bits of the weights packed 64 channels per word for the C++ kernel (:mod:`detkd.kernels`), the input
  signed and packed on the fly, ``sum sign(x) sign(w)`` by XNOR + popcount, then XNOR-Net's
  ``K * alpha`` and the bias in PyTorch. Same outputs as the float simulation (integer sums are exact).
- :func:`pack_model` — a copy of a model with every binary conv on that kernel.
- :func:`save_packed` / :func:`load_packed` — a checkpoint where each binary conv's weights are one
  bit each (``np.packbits`` of the flattened filter, so 32x smaller than float32 up to the last byte of
  each filter) plus its per-filter ``alpha``; everything else stays float. Loading rebuilds the model
  from its spec with latent weights ``±alpha``, which reproduces the original's outputs exactly.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from detkd.models.binary import BinaryConv2d, box_filter, replace_module

__all__ = ["PackedBinaryConv2d", "load_packed", "pack_model", "packed_sizes", "save_packed"]


def _kernel() -> Any:
    from detkd.kernels import xnor_kernel

    return xnor_kernel()  # compiled once per environment, cached per process


class PackedBinaryConv2d(nn.Module):
    """A :class:`BinaryConv2d` (``binarize_input=True``) running on the bit-packed CPU kernel.

    Input ``Float[B, C, H, W]`` -> ``Float[B, O, H', W']`` (float32, CPU).
    """

    def __init__(self, conv: BinaryConv2d) -> None:
        super().__init__()
        if not conv.binarize_input:
            raise ValueError("the XNOR kernel needs binary inputs (binarize_input=True)")
        kernel = _kernel()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        self.mode = conv.mode
        weight = conv.weight.detach().float().cpu()
        self.register_buffer("packed_weight", kernel.pack_weight(weight))
        self.register_buffer("alpha", conv.alpha().detach().float().cpu() if conv.mode == "xnor" else torch.ones(conv.out_channels))
        self.register_buffer("bias", conv.bias.detach().float().cpu() if conv.bias is not None else torch.zeros(conv.out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous()
        kernel = _kernel()
        packed, abs_mean = kernel.pack_input(x, self.mode == "xnor")  # signs and XNOR-Net's A in one pass
        scale = box_filter(abs_mean, self.kernel_size, self.stride, self.padding, self.dilation) if self.mode == "xnor" else abs_mean
        return kernel.xnor_conv2d(packed, self.packed_weight, self.in_channels, *self.kernel_size,
                                  *self.stride, *self.padding, *self.dilation, scale, self.alpha, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, mode={self.mode}")


def _binary_convs(model: nn.Module) -> list[tuple[str, BinaryConv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BinaryConv2d)]


def pack_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode, CPU) whose binary convs run on the XNOR kernel."""
    packed = copy.deepcopy(model).eval().cpu()
    for name, conv in _binary_convs(packed):
        if conv.binarize_input:
            replace_module(packed, name, PackedBinaryConv2d(conv))
    return packed


def _bits(weight: torch.Tensor) -> torch.Tensor:
    """Sign bits of each filter, flattened and packed 8 per byte: ``UInt8[O, ceil(C*kh*kw / 8)]``."""
    flat = (weight.detach().cpu().flatten(1) >= 0).numpy()
    return torch.from_numpy(np.packbits(flat, axis=1))


def save_packed(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` with 1-bit binary conv weights (see the module docstring), atomically."""
    from detkd.engine.checkpoint import detector_meta, write_checkpoint

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    layers = {}
    for name, conv in _binary_convs(model):
        del state[f"{name}.weight"]
        state[f"{name}.weight_bits"] = _bits(conv.weight)
        state[f"{name}.alpha"] = conv.alpha().detach().cpu().float()
        layers[name] = list(conv.weight.shape)
    return write_checkpoint(path, {**detector_meta(model), "packed_binary": layers}, state)


def load_packed(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model written by :func:`save_packed` (float simulation; :func:`pack_model` it for the kernel).

    Raises:
        CheckpointError: not a packed checkpoint, or tensors that do not fit the model.
    """
    from detkd.engine.checkpoint import CheckpointError, detector_from_checkpoint, load_checkpoint_file

    checkpoint = load_checkpoint_file(path)
    meta = checkpoint.get("meta", {}).get("detkd", {})
    if "packed_binary" not in meta:
        raise CheckpointError(f"{path}: not a packed binary checkpoint (no meta.detkd.packed_binary)")
    state: dict[str, Any] = dict(checkpoint["state_dict"])
    for name, shape in meta["packed_binary"].items():
        bits, alpha = state.pop(f"{name}.weight_bits", None), state.pop(f"{name}.alpha", None)
        if bits is None or alpha is None:
            raise CheckpointError(f"{path}: packed layer {name} lacks its bits or alpha")
        n = int(np.prod(shape[1:]))
        signs = np.unpackbits(bits.numpy(), axis=1, count=n).astype(np.float32) * 2 - 1
        if signs.shape != (shape[0], n) or alpha.shape != (shape[0],):
            raise CheckpointError(f"{path}: packed layer {name} does not have {shape[0]} filters of {n} bits")
        state[f"{name}.weight"] = torch.from_numpy(signs).view(shape) * alpha.view(-1, 1, 1, 1)
    return detector_from_checkpoint({"meta": checkpoint["meta"], "state_dict": state}, str(path))


def packed_sizes(model: nn.Module) -> dict[str, int]:
    """Exact bytes of the binary convs' weights: ``float32`` as trained vs ``packed`` (1 bit each,
    whole bytes per filter) plus their ``alpha`` vectors; ``other`` = every other tensor in float32."""
    binary = _binary_convs(model)
    names = {f"{n}.weight" for n, _ in binary}
    float_bytes = sum(m.weight.numel() * 4 for _, m in binary)
    packed = sum(m.out_channels * ((m.weight[0].numel() + 7) // 8) + m.out_channels * 4 for _, m in binary)
    other = sum(v.numel() * v.element_size() for k, v in model.state_dict().items() if k not in names)
    return {"binary_float32": float_bytes, "binary_packed": packed, "other": other}
