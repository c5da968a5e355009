"""Deploying binarized models: bit-packed weights and the XNOR/popcount inference path.

- :class:`PackedBinaryConv2d` — inference twin of :class:`~detkd.binary.layers.BinaryConv2d`: the sign
  bits of the weights packed 64 channels per word for the C++ kernel (:mod:`detkd.binary.kernels`), the input
  signed and packed on the fly, ``sum sign(x) sign(w)`` by XNOR + popcount, then XNOR-Net's
  ``K * alpha`` and the bias in PyTorch. Same outputs as the float simulation (integer sums are exact).
- :func:`pack_model` — a copy of a model with every binary conv on that kernel.
- :func:`pack_state` / :func:`unpack_state` — a state dict where each binary conv's weights are one
  bit each (``np.packbits`` of the flattened filter, so 32x smaller than float32 up to the last byte of
  each filter) plus its per-filter ``alpha``; everything else stays float. Unpacking gives latent
  weights ``±alpha``, which reproduce the original's outputs exactly. The checkpoint files around
  them are the engine's (:func:`detkd.engine.checkpoint.save_packed` / ``load_packed``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from detkd.binary.layers import BinaryConv2d, box_filter, replace_module

__all__ = ["PackedBinaryConv2d", "pack_model", "pack_state", "packed_sizes", "unpack_state"]


def _kernel() -> Any:
    from detkd.binary.kernels import xnor_kernel

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


def pack_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """``model``'s state dict with every binary conv's ``weight`` replaced by ``weight_bits``
    (``UInt8[O, ceil(C*kh*kw / 8)]``) and ``alpha`` (``Float[O]``), and the packed layers' weight shapes."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    layers = {}
    for name, conv in _binary_convs(model):
        del state[f"{name}.weight"]
        state[f"{name}.weight_bits"] = _bits(conv.weight)
        state[f"{name}.alpha"] = conv.alpha().detach().cpu().float()
        layers[name] = list(conv.weight.shape)
    return state, layers


def unpack_state(state: dict[str, Any], layers: dict[str, list[int]], source: str) -> dict[str, Any]:
    """The inverse of :func:`pack_state`: latent weights ``sign * alpha`` back in place of the bits.

    Raises:
        ValueError: a packed layer lacks its bits or alpha, or they do not fit its shape (``source``
            names the file in the message).
    """
    state = dict(state)
    for name, shape in layers.items():
        bits, alpha = state.pop(f"{name}.weight_bits", None), state.pop(f"{name}.alpha", None)
        if bits is None or alpha is None:
            raise ValueError(f"{source}: packed layer {name} lacks its bits or alpha")
        n = int(np.prod(shape[1:]))
        signs = np.unpackbits(bits.numpy(), axis=1, count=n).astype(np.float32) * 2 - 1
        if signs.shape != (shape[0], n) or alpha.shape != (shape[0],):
            raise ValueError(f"{source}: packed layer {name} does not have {shape[0]} filters of {n} bits")
        state[f"{name}.weight"] = torch.from_numpy(signs).view(shape) * alpha.view(-1, 1, 1, 1)
    return state


def packed_sizes(model: nn.Module) -> dict[str, int]:
    """Exact bytes of the binary convs' weights: ``float32`` as trained vs ``packed`` (1 bit each,
    whole bytes per filter) plus their ``alpha`` vectors; ``other`` = every other tensor in float32."""
    binary = _binary_convs(model)
    names = {f"{n}.weight" for n, _ in binary}
    float_bytes = sum(m.weight.numel() * 4 for _, m in binary)
    packed = sum(m.out_channels * ((m.weight[0].numel() + 7) // 8) + m.out_channels * 4 for _, m in binary)
    other = sum(v.numel() * v.element_size() for k, v in model.state_dict().items() if k not in names)
    return {"binary_float32": float_bytes, "binary_packed": packed, "other": other}
