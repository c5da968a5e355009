"""CPU-scale SSD backbone: VGG16 stages at a width multiplier, L2Norm, and size-aware extra layers.

This is SSD300's feature extractor (Liu et al. 2016; torchvision's ``SSDFeatureExtractorVGG``)
shrunk for CPUs: every channel count is multiplied by ``width`` (rounded to a multiple of 8), convs
may carry BatchNorm so the network trains from scratch, and the extra layers are chosen from the
input size, so the same builder works at 300, 320, 512 and at 64/96 px for tests.

Layer set (module names relative to the backbone; channels at ``width=1``):

========== ========================================================== =====================
module     layers                                                     output map
========== ========================================================== =====================
features   conv1_1 conv1_2 pool1 conv2_1 conv2_2 pool2 conv3_1..3      map 0: conv4_3, 512 ch,
           pool3 conv4_1 conv4_2 conv4_3 (3x3 conv[+BN]+ReLU; pools    stride 8 (38x38 at 300)
           2x2/2 with ceil_mode, as SSD300's pool3)
l2norm     L2-normalise map 0 over channels, times a learned scale     head input 0
extra[0]   pool4 conv5_1..3 pool5 (3x3/1) fc6 (3x3, dilated, 1024)     map 1: fc7, 1024 ch,
           fc7 (1x1, 1024)                                             stride 16 (19x19)
extra[k]   conv{k+7}_1 (1x1 reduce) conv{k+7}_2 (3x3, stride 2 while   map k+1
           the map is > 5 px, then "valid" 3x3 / 2x2 down to 1x1;
           conv+bias+ReLU, no BN)
========== ========================================================== =====================

Who consumes what (the pruning issue needs this): map 0 *before* ``l2norm`` feeds ``extra[0]``
(pool4 -> conv5_1); *after* ``l2norm`` it feeds head conv 0 (``head.classification_head.module_list.0``
and ``head.regression_head.module_list.0``). Map ``k >= 1`` (the output of ``extra[k-1]``'s last
conv) feeds head conv ``k`` and ``extra[k].conv{k+7}_1``. Pruning the output channels of conv4_3
therefore also prunes ``l2norm.weight``, conv5_1's inputs and head conv 0's inputs. Every conv is a
``Conv2dNormActivation`` (``nn.Sequential`` of Conv2d, BatchNorm2d except in the extra layers, ReLU),
so the tree holds only plain layers plus the one :class:`L2Norm` scale vector; torch-pruning's
``DependencyGraph`` handles it when given ``unwrapped_parameters=[(backbone.l2norm.weight, 0)]``
(torchvision's SSD300 has the same vector as ``backbone.scale_weight``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.ops.misc import Conv2dNormActivation

from detkd.models.backbones import scale_channels

__all__ = ["L2Norm", "SSDVGGBackbone", "ssd_anchor_generator", "ssd_feature_sizes"]

# VGG16 ("D") stages 1-4 up to conv4_3 and stage 5, as (name, channels) / pool names.
_STAGES_1_TO_4: list[str | tuple[str, int]] = [
    ("conv1_1", 64), ("conv1_2", 64), "pool1",
    ("conv2_1", 128), ("conv2_2", 128), "pool2",
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), "pool3",
    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512),
]  # fmt: skip
_STAGE_5 = [("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)]
_FC_CHANNELS = 1024
# SSD300's extra layers (1x1 reduce, 3x3 out); maps beyond the fourth (SSD512) repeat the last.
_EXTRA_CHANNELS = [(256, 512), (128, 256), (128, 256), (128, 256)]
_MIN_IMGSZ = 32  # smallest input that still yields three maps (4x4, 2x2, 1x1)


class L2Norm(nn.Module):
    """SSD's conv4_3 normalisation: ``x / ||x||_2`` over channels, times a learned per-channel scale.

    ``Float[B, C, H, W] -> Float[B, C, H, W]``. conv4_3 activations are much larger than those of
    deeper maps; without this the first head conv dominates early training (SSD paper, ParseNet).
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=self.eps) * self.weight.view(1, -1, 1, 1)


def _extra_kernels(size: int) -> list[tuple[int, int]]:
    """(kernel, stride) of each extra 3x3 layer that takes a ``size`` x ``size`` map down to 1x1.

    Stride 2 (padding 1) while the map is larger than 5 px, then unpadded 3x3 convs (5 -> 3 -> 1) and
    a final unpadded 2x2 when 2 px remain: 19 -> 10 -> 5 -> 3 -> 1 is exactly SSD300's conv8..conv11.
    """
    kernels = []
    while size > 1:
        if size > 5:
            kernels.append((3, 2))
            size = math.ceil(size / 2)
        elif size >= 3:
            kernels.append((3, 1))
            size -= 2
        else:
            kernels.append((2, 1))
            size = 1
    return kernels


def ssd_feature_sizes(imgsz: int) -> list[int]:
    """Side length of each output map of :class:`SSDVGGBackbone` for a square ``imgsz`` input."""
    if imgsz < _MIN_IMGSZ:
        raise ValueError(f"ssd_cpu needs imgsz >= {_MIN_IMGSZ}, got {imgsz}")
    conv4_3 = math.ceil(math.ceil(math.ceil(imgsz / 2) / 2) / 2)  # three ceil-mode 2x2 pools
    sizes = [conv4_3, math.ceil(conv4_3 / 2)]
    for kernel, stride in _extra_kernels(sizes[-1]):
        sizes.append(math.ceil(sizes[-1] / 2) if stride == 2 else sizes[-1] - kernel + 1)
    return sizes


def ssd_anchor_generator(
    num_maps: int, first_scale: float = 0.1, min_scale: float = 0.2, max_scale: float = 0.9
) -> DefaultBoxGenerator:
    """SSD default boxes for ``num_maps`` maps (``num_maps >= 3``), as in the SSD paper's VOC setting.

    Scales (fraction of the image side): ``first_scale`` for map 0 (conv4_3), then evenly spaced from
    ``min_scale`` to ``max_scale``, plus one step more for the last map's second square box. Aspect
    ratios {2} on the first and last two maps and {2, 3} elsewhere (4 or 6 boxes per cell, SSD300's
    layout). Box centres follow each map's own grid (``steps=None``), which suits any input size.
    """
    if num_maps < 3:
        raise ValueError(f"need at least 3 feature maps, got {num_maps}")
    step = (max_scale - min_scale) / (num_maps - 2)
    scales = [first_scale] + [min_scale + step * k for k in range(num_maps - 1)] + [max_scale + step]
    ratios = [[2] if k == 0 or k >= num_maps - 2 else [2, 3] for k in range(num_maps)]
    return DefaultBoxGenerator(ratios, scales=scales, steps=None)


class SSDVGGBackbone(nn.Module):
    """Width-scaled SSD VGG16 feature extractor (see the module docstring for the layer set).

    Args:
        imgsz: square input size the extra layers are planned for (>= 32).
        width: channel multiplier (0.25 -> conv4_3 has 128 channels).
        batch_norm: BatchNorm after every conv of the VGG stages and fc6/fc7 (to train from scratch
            without ImageNet weights); the extra layers never have it (conv bias instead).

    ``forward(x Float[B, 3, imgsz, imgsz])`` (already normalised) returns an ``OrderedDict`` of the
    maps ``"0" .. str(len(out_channels) - 1)``, largest first; ``out_channels`` and ``feature_sizes``
    describe them.
    """

    def __init__(self, imgsz: int = 300, width: float = 0.25, batch_norm: bool = True) -> None:
        super().__init__()
        self.feature_sizes = ssd_feature_sizes(imgsz)
        norm = nn.BatchNorm2d if batch_norm else None

        def ch(channels: int) -> int:
            return scale_channels(channels, width)

        layers, c_in = self._vgg_layers(_STAGES_1_TO_4, 3, ch, norm)
        self.features = nn.Sequential(layers)
        self.l2norm = L2Norm(c_in)
        self.out_channels = [c_in]

        stage5, c5 = self._vgg_layers(["pool4", *_STAGE_5], c_in, ch, norm)
        # fc6 dilation 6 is SSD300's (19x19 map); smaller maps get a smaller dilation so the taps
        # stay mostly inside the map instead of reading padding.
        dilation = max(1, min(6, self.feature_sizes[1] // 3))
        stage5["pool5"] = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        fc = ch(_FC_CHANNELS)
        stage5["fc6"] = Conv2dNormActivation(c5, fc, 3, padding=dilation, dilation=dilation, norm_layer=norm)
        stage5["fc7"] = Conv2dNormActivation(fc, fc, 1, norm_layer=norm)
        self.extra = nn.ModuleList([nn.Sequential(stage5)])
        self.out_channels.append(fc)

        # No BatchNorm in the extra layers: their maps shrink to 1x1, where batch statistics of a
        # small batch are noise (and train mode fails outright with batch 1). They are shallow.
        for i, (kernel, stride) in enumerate(_extra_kernels(self.feature_sizes[1])):
            mid, out = _EXTRA_CHANNELS[min(i, len(_EXTRA_CHANNELS) - 1)]
            block = OrderedDict()
            c_mid, c_out, pad = ch(mid), ch(out), 1 if stride == 2 else 0
            block[f"conv{i + 8}_1"] = Conv2dNormActivation(self.out_channels[-1], c_mid, 1, norm_layer=None)
            block[f"conv{i + 8}_2"] = Conv2dNormActivation(c_mid, c_out, kernel, stride, padding=pad, norm_layer=None)
            self.extra.append(nn.Sequential(block))
            self.out_channels.append(c_out)
        self._init_weights()

    @staticmethod
    def _vgg_layers(
        spec: list[str | tuple[str, int]], c_in: int, ch: Callable[[int], int], norm: type[nn.Module] | None
    ) -> tuple[OrderedDict[str, nn.Module], int]:
        """Named 3x3 conv blocks and ceil-mode 2x2 pools from a ``spec``; returns them and the last width."""
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for item in spec:
            if isinstance(item, str):
                layers[item] = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
                continue
            name, channels = item
            c_out = ch(channels)
            layers[name] = Conv2dNormActivation(c_in, c_out, 3, norm_layer=norm)
            c_in = c_out
        return layers, c_in

    def _init_weights(self) -> None:
        # VGG's own init (kaiming, fan_out) for every conv; torchvision's SSD does the same for VGG.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.features(x)
        outputs = [self.l2norm(x)]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return OrderedDict((str(i), v) for i, v in enumerate(outputs))
