"""Binarized layers: BNN (Hubara/Courbariaux 2016) and XNOR-Net (Rastegari 2016).

- :func:`sign_ste` — ``sign(x)`` forward (``sign(0) = +1``, so outputs are exactly ±1), straight-through
  backward ``g * 1{|x| <= 1}`` (the gradient of hard-tanh).
- :func:`stochastic_sign` — ``+1`` with probability ``hard_sigmoid(x) = clip((x + 1) / 2, 0, 1)``,
  else ``-1``; same straight-through backward.
- :class:`BinaryActivation` — either of the two as a module (stochastic only in training).
- :class:`BinaryConv2d` — a ``Conv2d`` whose real-valued *latent* weights are binarized on the fly.
  ``mode="bnn"``: ``conv(sign(x), sign(W))``. ``mode="xnor"``: ``conv(sign(x), sign(W)) * K * alpha``
  with ``alpha_o = mean |W_o|`` per output filter and ``K = box(mean_c |x|)``, the channel-mean of the
  real input's magnitude averaged over each kernel window (a ``1/(kh*kw)`` box filter with the conv's
  stride, padding and dilation). The sign of the input happens inside the layer so ``K`` sees the
  real input: XNOR-Net's block order BN -> BinActiv -> BinConv -> pool is
  ``BatchNorm2d -> BinaryConv2d(xnor) -> pool`` here. ``binarize_input=False`` keeps the input real
  (binary weights only, e.g. BinaryConnect).
- :func:`clip_latent_weights_` — clip every binary layer's latent weights to [-1, 1] (BNN does it
  after each optimizer step; outside that range the STE gradient is zero and weights would drift).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BinaryActivation", "BinaryConv2d", "binarize_convs", "box_filter", "clip_latent_weights_", "has_binary_convs", "replace_module",
           "sign_ste", "stochastic_sign", "xnor_input_scale"]


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return binary

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype), None


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0`` else ``-1`` (same shape and dtype); backward ``g * 1{|x| <= 1}``."""
    binary = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return _SignSTE.apply(x, binary)


def stochastic_sign(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``+1`` with probability ``clip((x + 1) / 2, 0, 1)``, else ``-1``; backward as :func:`sign_ste`."""
    p = ((x.detach() + 1) / 2).clamp(0, 1)
    draw = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    binary = torch.where(draw < p, torch.ones_like(x), -torch.ones_like(x))
    return _SignSTE.apply(x, binary)


class BinaryActivation(nn.Module):
    """``sign`` with a straight-through gradient; ``stochastic=True`` draws in training mode only."""

    def __init__(self, stochastic: bool = False) -> None:
        super().__init__()
        self.stochastic = stochastic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_sign(x) if self.stochastic and self.training else sign_ste(x)

    def extra_repr(self) -> str:
        return f"stochastic={self.stochastic}"


def box_filter(a: torch.Tensor, kernel_size: tuple[int, int], stride: Any, padding: Any, dilation: Any) -> torch.Tensor:
    """``Float[B, 1, H, W] -> Float[B, 1, H', W']``: the mean of ``a`` over each conv window (zero padding counts as 0)."""
    if dilation in (1, (1, 1)):
        return F.avg_pool2d(a, kernel_size, stride, padding, count_include_pad=True)
    k = torch.full((1, 1, *kernel_size), 1.0 / (kernel_size[0] * kernel_size[1]), dtype=a.dtype, device=a.device)
    return F.conv2d(a, k, stride=stride, padding=padding, dilation=dilation)


def xnor_input_scale(x: torch.Tensor, kernel_size: tuple[int, int], stride: Any, padding: Any, dilation: Any) -> torch.Tensor:
    """XNOR-Net's ``K``: ``Float[B, 1, H', W']`` = box filter of ``A = mean_c |x|`` over each conv window.

    ``x`` Float[B, C, H, W] (the real input); zero padding counts as 0 in the average, as the conv sees it.
    """
    return box_filter(x.abs().mean(dim=1, keepdim=True), kernel_size, stride, padding, dilation)


class BinaryConv2d(nn.Conv2d):
    """``nn.Conv2d`` with binarized weights (and inputs), see the module docstring.

    Args:
        mode: ``"bnn"`` or ``"xnor"``.
        binarize_input: sign the input inside the layer (both modes); False = binary weights only.
        stochastic: stochastic binarization of the input in training mode (BNN's option).
        other arguments: as ``nn.Conv2d`` (``groups`` must be 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, mode: str = "bnn",
                 binarize_input: bool = True, stochastic: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        if mode not in ("bnn", "xnor"):
            raise ValueError(f"mode must be 'bnn' or 'xnor', not {mode!r}")
        if groups != 1:
            raise ValueError("BinaryConv2d supports groups=1 only")
        if not isinstance(self.padding, tuple):
            raise ValueError(f"padding={self.padding!r} is not supported; give numbers")
        self.mode, self.binarize_input, self.stochastic = mode, binarize_input, stochastic

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, mode: str = "bnn", binarize_input: bool = True, stochastic: bool = False) -> BinaryConv2d:
        """A binary conv with ``conv``'s geometry, its weights (clipped to [-1, 1]) as latent weights and its bias."""
        out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, conv.bias is not None, mode, binarize_input, stochastic)
        with torch.no_grad():
            out.weight.copy_(conv.weight.clamp(-1, 1))
            if conv.bias is not None:
                out.bias.copy_(conv.bias)
        return out.to(conv.weight.device)

    def alpha(self) -> torch.Tensor:
        """Float[C_out]: XNOR-Net's per-filter scale ``||W_o||_1 / n``."""
        return self.weight.abs().mean(dim=(1, 2, 3))

    def binary_weight(self) -> torch.Tensor:
        """Float[C_out, C_in, kh, kw] of exactly ±1 (straight-through gradient to the latent weights)."""
        return sign_ste(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x
        if self.binarize_input:
            xb = stochastic_sign(x) if self.stochastic and self.training else sign_ste(x)
        out = F.conv2d(xb, self.binary_weight(), None, self.stride, self.padding, self.dilation, self.groups)
        if self.mode == "xnor":
            if self.binarize_input:
                out = out * xnor_input_scale(x, self.kernel_size, self.stride, self.padding, self.dilation)
            out = out * self.alpha().view(1, -1, 1, 1)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mode={self.mode}, binarize_input={self.binarize_input}, stochastic={self.stochastic}"


def has_binary_convs(model: nn.Module) -> bool:
    """True when ``model`` has at least one :class:`BinaryConv2d`."""
    return any(isinstance(m, BinaryConv2d) for m in model.modules())


@torch.no_grad()
def clip_latent_weights_(model: nn.Module, bound: float = 1.0) -> None:
    """Clip the latent weights of every :class:`BinaryConv2d` in ``model`` to ``[-bound, bound]`` in place."""
    for module in model.modules():
        if isinstance(module, BinaryConv2d):
            module.weight.clamp_(-bound, bound)


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where submodule ``name`` (dotted path) of ``model`` is."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def binarize_convs(model: nn.Module, mode: str = "xnor", keep_1x1: bool = False, stochastic: bool = False,
                   skip: tuple[str, ...] = (), only: Collection[str] | None = None) -> list[str]:
    """Replace every dense ``nn.Conv2d`` of ``model`` by a :class:`BinaryConv2d` (same geometry, its
    weights clipped to [-1, 1] as latent weights), in place; returns the replaced module names.

    Kept full precision: the first conv in module order (it reads the RGB image), the convs named in
    ``skip`` (the prediction layer), grouped convs, with ``keep_1x1`` every 1x1 conv, and when
    ``only`` is given every conv it does not name (a layer policy: :mod:`detkd.binary.policy`).

    Block order: detkd's conv blocks are Conv -> BN -> LeakyReLU (-> pool), so each binary conv reads
    a BN -> LeakyReLU output and signs it inside; ``sign(LeakyReLU(y)) = sign(y)``, which gives
    XNOR-Net's BN -> BinActiv -> BinConv order, except that a pool sits before the sign instead of
    after the conv.
    """
    convs = [(n, m) for n, m in model.named_modules() if type(m) is nn.Conv2d]
    if not convs:
        return []
    first = convs[0][0]
    replaced = []
    for name, conv in convs:
        if name == first or name in skip or conv.groups != 1 or (keep_1x1 and conv.kernel_size == (1, 1)) \
                or (only is not None and name not in only):
            continue
        replace_module(model, name, BinaryConv2d.from_conv(conv, mode, binarize_input=True, stochastic=stochastic))
        replaced.append(name)
    return replaced
