"""Necks (what happens at the final grid) and the shared YOLOv2 prediction head.

A neck takes the backbone's list of stage maps and returns one stride-32 map
``Float[B, out_channels, S_h, S_w]``; :class:`YoloHead` turns it into the raw output
``Float[B, A, S_h, S_w, 5 + K]`` laid out per anchor as ``(tx, ty, tw, th, obj, class_0..K-1)``.

- :class:`PlainNeck` — Tiny-YOLOv2: 3x3 convs on the last map.
- :class:`PassthroughNeck` — YOLOv2: 3x3 convs, then the stride-16 map squeezed by a 1x1 conv,
  reorganised (space-to-depth 2) and concatenated, then a 3x3 conv.
- :class:`StackingNeck` — F-YOLO: a 3x3 conv, earlier maps squeezed + reorganised to the final grid
  and concatenated, a narrow 3x3 conv, then cheap 1x1 convs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from detkd.models.backbones import ConvBNAct, SpaceToDepth

__all__ = ["PassthroughNeck", "PlainNeck", "StackingNeck", "YoloHead"]


class YoloHead(nn.Module):
    """1x1 prediction conv: ``Float[B, C, S_h, S_w] -> Float[B, A, S_h, S_w, 5 + K]`` raw values.

    Args:
        in_channels: channels of the neck output.
        num_anchors: A.
        num_classes: K.
        prior_prob: initial objectness probability. Starting near 0 (not at sigmoid(0) = 0.5)
            keeps the no-object term, summed over every cell, from swamping the first updates.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_outputs = 5 + num_classes
        self.conv = nn.Conv2d(in_channels, num_anchors * self.num_outputs, kernel_size=1)
        # small weights: the first predictions are the anchors themselves at the cell centers
        nn.init.normal_(self.conv.weight, std=0.01)
        bias = torch.zeros(num_anchors, self.num_outputs)
        bias[:, 4] = math.log(prior_prob / (1 - prior_prob))
        with torch.no_grad():
            self.conv.bias.copy_(bias.flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, s_h, s_w = x.shape
        out = self.conv(x).reshape(-1, self.num_anchors, self.num_outputs, s_h, s_w)
        return out.permute(0, 1, 3, 4, 2).contiguous()


def _conv_stack(c_in: int, channels: Sequence[int], kernel: int) -> tuple[nn.Sequential, int]:
    layers = []
    for c_out in channels:
        layers.append(ConvBNAct(c_in, c_out, kernel))
        c_in = c_out
    return nn.Sequential(*layers), c_in


class PlainNeck(nn.Module):
    """Tiny-YOLOv2's final convs: ``depth`` 3x3 convs of ``channels`` on the last backbone map.

    ``forward(feats: list[Tensor]) -> Float[B, out_channels, S_h, S_w]`` (uses ``feats[-1]`` only).
    """

    def __init__(self, in_channels: int, channels: int, depth: int) -> None:
        super().__init__()
        self.convs, self.out_channels = _conv_stack(in_channels, [channels] * depth, 3)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.convs(feats[-1])


class PassthroughNeck(nn.Module):
    """YOLOv2's passthrough layer.

    ``depth`` 3x3 convs of ``channels`` on the stride-32 map; the stride-16 map (``feats[-2]``)
    squeezed to ``squeeze`` channels by a 1x1 conv and space-to-depth'ed by 2 (26x26x64 -> 13x13x256
    at 416); both concatenated and fused by a 3x3 conv of ``channels``.

    ``forward(feats) -> Float[B, channels, S_h, S_w]``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, squeeze: int, depth: int) -> None:
        super().__init__()
        self.convs, c_top = _conv_stack(in_channels[-1], [channels] * depth, 3)
        self.squeeze = ConvBNAct(in_channels[-2], squeeze, 1)
        self.reorg = SpaceToDepth(2)
        self.fuse = ConvBNAct(c_top + 4 * squeeze, channels, 3)
        self.out_channels = channels

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        top = self.convs(feats[-1])
        skip = self.reorg(self.squeeze(feats[-2]))
        return self.fuse(torch.cat((skip, top), dim=1))


class StackingNeck(nn.Module):
    """F-YOLO's feature-map stacking, narrow 3x3 conv and extra 1x1 convs.

    Args:
        in_channels: channels of every backbone stage.
        taps: indices of the stages to stack (each reorganised by ``stride[-1] / stride[tap]``).
        strides: stride of every backbone stage.
        squeeze: 1x1 squeeze channels per tap.
        wide: channels of the 3x3 conv on the last map before stacking (1024 at width 1).
        narrow: channels of the 3x3 conv after stacking (512 at width 1; Tiny-YOLO has 1024).
        depth: number of extra 1x1 convs of ``narrow`` channels after the narrow conv.

    ``forward(feats) -> Float[B, narrow, S_h, S_w]``. The concatenation is
    ``[stacked taps in tap order..., wide conv output]`` with ``concat_channels`` channels.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        taps: Sequence[int],
        strides: Sequence[int],
        squeeze: Sequence[int],
        wide: int,
        narrow: int,
        depth: int,
    ) -> None:
        super().__init__()
        if len(taps) != len(squeeze):
            raise ValueError(f"{len(taps)} taps but {len(squeeze)} squeeze widths")
        self.taps = list(taps)
        self.top = ConvBNAct(in_channels[-1], wide, 3)
        self.stacks = nn.ModuleList()
        self.concat_channels = wide
        for tap, c_sq in zip(taps, squeeze):
            factor = strides[-1] // strides[tap]
            self.stacks.append(nn.Sequential(ConvBNAct(in_channels[tap], c_sq, 1), SpaceToDepth(factor)))
            self.concat_channels += c_sq * factor * factor
        self.narrow = ConvBNAct(self.concat_channels, narrow, 3)
        self.extra, self.out_channels = _conv_stack(narrow, [narrow] * depth, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        stacked = [stack(feats[tap]) for tap, stack in zip(self.taps, self.stacks)]
        x = torch.cat((*stacked, self.top(feats[-1])), dim=1)
        return self.extra(self.narrow(x))
