"""Darknet building blocks and the two YOLOv2-family backbones.

Every conv is Darknet's conv-BN-LeakyReLU(0.1) with "same" padding. A backbone is a list of
stages; stage ``i`` ends at ``strides[i]`` with ``out_channels[i]`` channels, and ``forward``
returns every stage output so necks can tap earlier maps (YOLOv2's passthrough, F-YOLO's stacking).

Channels follow a width multiplier: ``scale_channels(c, width)`` rounds ``c * width`` to a
multiple of 8, at least 8 (CPU kernels vectorise best on multiples of 8). ``min_channels`` (a multiple of 8,
at least 8) raises that floor for every backbone conv: ONNX Runtime's blocked-channel (NCHWc) kernels work in
blocks of 16 channels on AVX-512 CPUs (8 on AVX2), and an 8-channel map there is reordered to plain NCHW and back
around the next pool.

``stem`` picks how the image enters the network: ``"pool"`` (Darknet's: a 3x3 conv at full resolution, then
the first 2x2 max-pool) or ``"conv"`` (the first conv takes stride 2 and that pool goes). Both reach stride 2
after stage 1 with the same channels; ``"conv"`` computes the first conv at a quarter of the positions. Without
the pool the convs of stage 1 move up one index in their module names (``stages.1.1.*`` becomes ``stages.1.0.*``),
so weights of one stem do not load by name into the other; a checkpoint rebuilds its own from its spec.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "STEMS",
    "ConvBNAct",
    "DarknetBackbone",
    "MaxPoolStride1",
    "SpaceToDepth",
    "darknet19",
    "depth_to_space",
    "option_problems",
    "scale_channels",
    "space_to_depth",
    "tiny_darknet",
]

# A stage spec: "M" = 2x2/2 max-pool, "M1" = 2x2/1 max-pool (keeps the size), (c, k) = conv of c
# channels (before width scaling) and kernel k, (c, k, s) = the same with stride s.
Layer = str | tuple[int, ...]

# Darknet-19 (YOLO9000 paper, Table 6) without its classifier; stage 4 is the stride-16 map the
# passthrough taps, stage 5 the stride-32 output.
DARKNET19: list[list[Layer]] = [
    [(32, 3)],
    ["M", (64, 3)],
    ["M", (128, 3), (64, 1), (128, 3)],
    ["M", (256, 3), (128, 1), (256, 3)],
    ["M", (512, 3), (256, 1), (512, 3), (256, 1), (512, 3)],
    ["M", (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)],
]

# Tiny-YOLOv2 (Darknet yolov2-tiny-voc.cfg) up to the 512 conv; the last pool has stride 1 so the
# grid stays 13x13 at 416. Stage outputs are taken *before* the next pool: 104x104x64 (stage 2),
# 52x52x128 (stage 3), 26x26x256 (stage 4), 13x13x512 (stage 5) at 416.
TINY_DARKNET: list[list[Layer]] = [
    [(16, 3)],
    ["M", (32, 3)],
    ["M", (64, 3)],
    ["M", (128, 3)],
    ["M", (256, 3)],
    ["M", (512, 3), "M1"],
]


def scale_channels(channels: int, width: float, divisor: int = 8, minimum: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor``, at least ``minimum``."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(minimum, int(round(channels * width / divisor)) * divisor)


class ConvBNAct(nn.Sequential):
    """Conv (no bias, "same" padding) -> BatchNorm -> LeakyReLU(0.1): ``[B, c_in, H, W] -> [B, c_out, H/s, W/s]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.1, inplace=True),
        )


class MaxPoolStride1(nn.Module):
    """Darknet's 2x2 max-pool with stride 1: ``[B, C, H, W] -> [B, C, H, W]``.

    Darknet pads the right/bottom border with -inf; replicating the edge gives the same maxima
    and exports to ONNX as a plain ``Pad(mode=edge)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.pad(x, (0, 1, 0, 1), mode="replicate"))


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Reorg: ``[B, C, H, W] -> [B, C*f*f, H/f, W/f]``; each ``f x f`` block becomes channels.

    Output channel ``c*f*f + dy*f + dx`` holds input channel ``c`` at offset ``(dy, dx)`` inside
    the block (the order of ``torch.nn.functional.pixel_unshuffle``). Written as reshape/permute
    so ONNX exports it as Reshape/Transpose, which every runtime supports.
    """
    _, c, h, w = x.shape
    if not torch.jit.is_tracing() and (h % factor or w % factor):  # traced sizes are tensors
        raise ValueError(f"space_to_depth: size {h}x{w} is not divisible by {factor}")
    x = x.reshape(-1, c, h // factor, factor, w // factor, factor)
    x = x.permute(0, 1, 3, 5, 2, 4)  # [B, C, dy, dx, H/f, W/f]
    return x.reshape(-1, c * factor * factor, h // factor, w // factor)


def depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`: ``[B, C*f*f, H, W] -> [B, C, H*f, W*f]``."""
    _, cff, h, w = x.shape
    c = cff // (factor * factor)
    x = x.reshape(-1, c, factor, factor, h, w).permute(0, 1, 4, 2, 5, 3)  # [B, C, H, dy, W, dx]
    return x.reshape(-1, c, h * factor, w * factor)


class SpaceToDepth(nn.Module):
    """Module form of :func:`space_to_depth` (so it shows up in module names and hooks)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


STEMS = ("pool", "conv")


def option_problems(min_channels: object, stem: object) -> list[tuple[str, object, str]]:
    """What is wrong with :class:`DarknetBackbone`'s ``min_channels`` and ``stem``, as ``(argument, value, problem)``
    (empty when both are valid), so the backbone and the builders that take them from a config check one rule."""
    problems: list[tuple[str, object, str]] = []
    if stem not in STEMS:
        problems.append(("stem", stem, f"must be one of {', '.join(STEMS)}"))
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 8 or min_channels % 8:
        problems.append(("min_channels", min_channels, "must be a multiple of 8, at least 8"))
    return problems


def strided_stem(spec: Sequence[Sequence[Layer]]) -> list[list[Layer]]:
    """``spec`` with its first conv at stride 2 in place of the 2x2 max-pool that follows it.

    The layer tuple of that conv gains a third item, the stride: ``[[(16, 3)], ["M", (32, 3)], ...]`` becomes
    ``[[(16, 3, 2)], [(32, 3)], ...]``. Raises ``ValueError`` when stage 0 is not one conv followed by a pool.
    """
    if len(spec) < 2 or len(spec[0]) != 1 or not isinstance(spec[0][0], tuple) or not spec[1] or spec[1][0] != "M":
        raise ValueError("stem='conv' needs a first stage of one conv and a second stage that starts with a 2x2 pool")
    channels, kernel = spec[0][0][:2]
    return [[(channels, kernel, 2)], list(spec[1][1:]), *(list(stage) for stage in spec[2:])]


class DarknetBackbone(nn.Module):
    """A plain Darknet-style stack of stages.

    Args:
        spec: stages of layers (see ``DARKNET19``/``TINY_DARKNET``).
        width: channel multiplier.
        min_channels: the fewest channels a conv gets after width scaling (8; 16 suits AVX-512 CPUs, see above).
        stem: ``"pool"`` (as ``spec`` says) or ``"conv"`` (:func:`strided_stem`).

    ``forward(images Float[B, 3, H, W]) -> list[Tensor]``, one map per stage; stage ``i`` has
    ``out_channels[i]`` channels at ``strides[i]`` (H and W must be divisible by ``strides[-1]``).
    """

    def __init__(self, spec: Sequence[Sequence[Layer]], width: float = 1.0, min_channels: int = 8,
                 stem: str = "pool") -> None:
        super().__init__()
        if problems := option_problems(min_channels, stem):
            name, value, problem = problems[0]
            raise ValueError(f"{name} = {value!r}: {problem}")
        if stem == "conv":
            spec = strided_stem(spec)
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        self.strides: list[int] = []
        c_in, stride = 3, 1
        for stage_spec in spec:
            layers: list[nn.Module] = []
            for layer in stage_spec:
                if layer == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                    stride *= 2
                elif layer == "M1":
                    layers.append(MaxPoolStride1())
                else:
                    assert isinstance(layer, tuple)
                    c_out = scale_channels(layer[0], width, minimum=min_channels)
                    conv_stride = layer[2] if len(layer) > 2 else 1
                    layers.append(ConvBNAct(c_in, c_out, layer[1], conv_stride))
                    stride *= conv_stride
                    c_in = c_out
            self.stages.append(nn.Sequential(*layers))
            self.out_channels.append(c_in)
            self.strides.append(stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def darknet19(width: float = 1.0) -> DarknetBackbone:
    """Darknet-19 features: stage 4 is stride 16 (512 ch at width 1), stage 5 stride 32 (1024 ch)."""
    return DarknetBackbone(DARKNET19, width)


def tiny_darknet(width: float = 1.0, min_channels: int = 8, stem: str = "pool") -> DarknetBackbone:
    """Tiny-YOLOv2 features: strides 1, 2, 4, 8, 16, 32 with 16..512 channels at width 1 (``stem="conv"``:
    strides 2, 2, 4, ...)."""
    return DarknetBackbone(TINY_DARKNET, width, min_channels, stem)
