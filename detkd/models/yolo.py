"""YOLOv2-family detectors: the YOLOv2 teacher, Tiny-YOLOv2 and the deep-narrow F-YOLO student.

All three share one head format (see :mod:`detkd.models.heads`): ``forward(images Float[B, 3, H, W]
in [0, 1]) -> Float[B, A, H/32, W/32, 5 + K]`` raw values ``(tx, ty, tw, th, obj, class logits)``,
identical in train and eval mode. ``decode`` turns them into per-image xyxy boxes in input pixels
(see :mod:`detkd.models.detector`), ``loss`` delegates to :mod:`detkd.models.yolo_loss`.

Builders (registered for :func:`detkd.models.factory.build_model`) take keyword-only, JSON-friendly
arguments: ``class_names``, ``imgsz`` (a multiple of 32), ``width`` (channel multiplier),
``depth`` (model-specific, see each builder) and ``anchors`` (``[[w, h], ...]`` pixels at
``imgsz``; default :func:`default_anchors`).

Measured at width 1.0, depth default, 416x416, 20 classes (VOC): params = ``sum(p.numel())``,
GFLOPs from ``torch.utils.flop_counter.FlopCounterMode`` at batch 1 (2 x multiply-adds of the convs;
BN, activations and pooling not counted, as Darknet reports them):

==============================  ========  ======
model                           params    GFLOPs
==============================  ========  ======
yolov2                          50.66 M   29.36
tiny_yolov2                     15.86 M   6.97
fyolo                           14.56 M   6.56
fyolo, stack_channels=[4,16,64] 15.16 M   6.77
==============================  ========  ======
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from detkd.models.backbones import DarknetBackbone, darknet19, option_problems, scale_channels, tiny_darknet
from detkd.models.box_coder import decode_grid
from detkd.models.detector import Candidates, DecodeConfig, Detections, as_float32
from detkd.models.factory import register_model
from detkd.models.heads import PassthroughNeck, PlainNeck, StackingNeck, YoloHead
from detkd.models.yolo_loss import YoloLossWeights, yolo_loss
from detkd.ops.nms import select_detections
from detkd.errors import ConfigError
from detkd.options import BinaryOptions, parse_section

__all__ = ["VOC_ANCHORS_GRID", "YoloDetector", "default_anchors", "fyolo", "tiny_yolov2", "yolo_decode", "yolov2"]

# YOLOv2's VOC anchors (yolov2-voc.cfg) in units of cells of the 13x13 grid.
VOC_ANCHORS_GRID: tuple[tuple[float, float], ...] = (
    (1.3221, 1.73145),
    (3.19275, 4.00944),
    (5.05587, 8.09892),
    (9.47112, 4.84053),
    (11.2364, 10.0071),
)


def default_anchors(imgsz: int = 416) -> list[list[float]]:
    """The VOC anchors in pixels at ``imgsz`` (grid units x ``imgsz / 13``), so they keep their
    fraction of the image whatever the input size."""
    return [[w * imgsz / 13, h * imgsz / 13] for w, h in VOC_ANCHORS_GRID]


def yolo_decode(outputs: torch.Tensor, anchors: torch.Tensor, stride: int, cfg: DecodeConfig | None = None) -> Detections:
    """Raw outputs -> detections per image, after per-class NMS.

    Args:
        outputs: Float[B, A, S_h, S_w, 5 + K] raw head outputs.
        anchors: Float[A, 2] (width, height) pixels.
        stride: pixels per cell (input is ``S_h * stride`` x ``S_w * stride``).
        cfg: thresholds (default :class:`DecodeConfig()`).

    Returns:
        Per image ``boxes`` Float[N, 4] xyxy input pixels clipped to the input, ``scores`` Float[N]
        = sigmoid(obj) * softmax(classes)[label], ``labels`` Int64[N]; N <= ``cfg.max_det``,
        sorted by score. Every (anchor, class) pair is a candidate, as in Darknet.
    """
    cfg = cfg or DecodeConfig()
    bsz, _, s_h, s_w, channels = outputs.shape
    num_classes = channels - 5
    boxes = decode_grid(outputs, anchors, stride).reshape(bsz, -1, 4)
    xs, ys = boxes[..., 0::2].clamp(0, s_w * stride), boxes[..., 1::2].clamp(0, s_h * stride)
    boxes = torch.stack((xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]), dim=-1)
    scores = torch.sigmoid(outputs[..., 4:5]) * torch.softmax(outputs[..., 5:], dim=-1)
    scores = scores.reshape(bsz, -1)  # [B, N*K], candidate i = box i // K, class i % K
    results: Detections = []
    for b in range(bsz):
        results.append(select_detections(boxes[b], scores[b].reshape(-1, num_classes), cfg))
    return results


class YoloDetector(nn.Module):
    """A YOLOv2-style single-grid detector: backbone -> neck -> :class:`YoloHead`.

    Args:
        backbone: stage maps of the image (the last at the output stride).
        neck: stage maps -> one map at the output stride.
        head: the prediction conv (A anchors, K classes).
        class_names: K class names, index = label.
        imgsz: square input size the model is built for (multiple of the stride).
        anchors: A (width, height) pairs in pixels at ``imgsz``; stored as the ``anchors`` buffer
            Float[A, 2] so it travels in the state_dict.
        loss_weights: multipliers of the loss terms.
        ignore_thr: IoU above which a non-responsible prediction escapes the no-object penalty.
    """

    anchors: torch.Tensor

    def __init__(
        self,
        backbone: DarknetBackbone,
        neck: nn.Module,
        head: YoloHead,
        class_names: Sequence[str],
        imgsz: int,
        anchors: Sequence[Sequence[float]] | torch.Tensor,
        loss_weights: YoloLossWeights | None = None,
        ignore_thr: float = 0.6,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.class_names = list(class_names)
        self.stride = backbone.strides[-1]
        if imgsz <= 0 or imgsz % self.stride:
            raise ValueError(f"imgsz must be a positive multiple of {self.stride}, got {imgsz}")
        self.imgsz = imgsz
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.float32).reshape(-1, 2).clone())
        if head.num_anchors != len(self.anchors) or head.num_outputs != 5 + len(self.class_names):
            raise ValueError(
                f"head predicts {head.num_anchors} anchors x {head.num_outputs} values but the model has "
                f"{len(self.anchors)} anchors and {len(self.class_names)} classes"
            )
        self.loss_weights = loss_weights or YoloLossWeights()
        self.ignore_thr = ignore_thr

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_anchors(self) -> int:
        return len(self.anchors)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``Float[B, 3, H, W]`` in [0, 1] (H, W multiples of the stride) -> ``Float[B, A, H/s, W/s, 5 + K]``."""
        h, w = images.shape[-2:]
        # while tracing for ONNX the sizes are traced tensors; the check would only freeze them
        if not torch.jit.is_tracing() and (h % self.stride or w % self.stride):
            raise ValueError(f"input size {h}x{w} is not a multiple of the stride {self.stride}")
        return as_float32(self.head(self.neck(self.backbone(images))))

    def decode(self, outputs: torch.Tensor, cfg: DecodeConfig | None = None) -> Detections:
        """See :func:`yolo_decode`."""
        return yolo_decode(outputs, self.anchors, self.stride, cfg)

    def candidates(self, outputs: torch.Tensor) -> Candidates:
        """Every (anchor, row, column) slot: boxes decoded on the grid, ``sigmoid(obj)``, ``softmax(classes)``;
        N = A * H * W in the raw outputs' order."""
        bsz, num_k = outputs.shape[0], outputs.shape[-1] - 5
        boxes = decode_grid(outputs, self.anchors.to(outputs), self.stride).reshape(bsz, -1, 4)
        obj = torch.sigmoid(outputs[..., 4]).reshape(bsz, -1)
        return Candidates(boxes, obj, torch.softmax(outputs[..., 5:], dim=-1).reshape(bsz, -1, num_k))

    def loss(self, outputs: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """``loss_obj``, ``loss_noobj``, ``loss_cls``, ``loss_box`` (see :func:`detkd.models.yolo_loss.yolo_loss`)."""
        return yolo_loss(outputs, targets, self.anchors, self.stride, self.loss_weights, self.ignore_thr)


def _detector(backbone: DarknetBackbone, neck: nn.Module, class_names: list[str], imgsz: int,
              anchors: list[list[float]] | None, binary: dict[str, Any] | None = None) -> YoloDetector:
    """Assemble the detector; ``binary`` (e.g. ``{"mode": "xnor", "keep_1x1": True}``) binarizes every
    conv but the first and the prediction conv (:func:`detkd.binary.layers.binarize_convs`)."""
    if not class_names:
        raise ValueError("class_names must not be empty")
    anchors = anchors if anchors is not None else default_anchors(imgsz)
    head = YoloHead(neck.out_channels, len(anchors), len(class_names))  # type: ignore[arg-type]
    detector = YoloDetector(backbone, neck, head, class_names, imgsz, anchors)
    if binary:
        from detkd.binary.layers import binarize_convs
        from detkd.binary.policy import DEFAULT_RULE, select_binary_convs

        opts = parse_section(BinaryOptions, binary, "model.binary")
        try:
            only = select_binary_convs(detector, DEFAULT_RULE if opts.policy == "speed" else None, opts.keep, skip=("head.conv",))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        binarize_convs(detector, skip=("head.conv",), mode=opts.mode, keep_1x1=opts.keep_1x1, stochastic=opts.stochastic,
                       only=only)
    return detector


@register_model("yolov2")
def yolov2(*, class_names: list[str], imgsz: int = 416, width: float = 1.0, depth: int = 2,
           anchors: list[list[float]] | None = None) -> YoloDetector:
    """YOLOv2 (yolov2-voc.cfg layout): Darknet-19 + passthrough, the paper's teacher.

    ``depth`` = number of 3x3 convs (1024 ch at width 1) on the stride-32 map before the
    passthrough concat (Darknet: 2). The passthrough squeezes the stride-16 map (512 ch) to 64 ch,
    reorganises it to 256 ch and concatenates it (1280 ch), then a 3x3 conv of 1024 feeds the head.
    """
    backbone = darknet19(width)
    neck = PassthroughNeck(backbone.out_channels, scale_channels(1024, width), scale_channels(64, width), depth)
    return _detector(backbone, neck, class_names, imgsz, anchors)


@register_model("tiny_yolov2")
def tiny_yolov2(*, class_names: list[str], imgsz: int = 416, width: float = 1.0, depth: int = 2,
                anchors: list[list[float]] | None = None, binary: dict[str, Any] | None = None) -> YoloDetector:
    """Tiny-YOLOv2 (yolov2-tiny-voc.cfg), the paper's baseline.

    16-32-64-128-256-512 3x3 convs with 2x2 max-pools (the last one stride 1), then ``depth`` 3x3
    convs of 1024 ch at width 1 (Darknet's VOC cfg: 2, i.e. 1024 then 1024; the COCO cfg's second
    conv has 512), then the 1x1 prediction conv.
    """
    backbone = tiny_darknet(width)
    neck = PlainNeck(backbone.out_channels[-1], scale_channels(1024, width), depth)
    return _detector(backbone, neck, class_names, imgsz, anchors, binary)


FYOLO_TAPS = (2, 3, 4)  # tiny_darknet stages at strides 4, 8, 16 (104, 52, 26 at 416)
FYOLO_SQUEEZE = (4, 16, 32)


@register_model("fyolo")
def fyolo(*, class_names: list[str], imgsz: int = 416, width: float = 1.0, depth: int = 2,
          anchors: list[list[float]] | None = None, stack_channels: list[int] | None = None,
          binary: dict[str, Any] | None = None, min_channels: int = 8, stem: str = "pool") -> YoloDetector:
    """F-YOLO, the deep-narrow student of Mehta & Ozturk (2018), on the Tiny-YOLOv2 base.

    Layout at width 1, 416: the Tiny-YOLOv2 backbone up to 13x13x512, a 3x3 conv of 1024; feature-map
    stacking of the earlier maps, each squeezed by a 1x1 conv and reorganised to 13x13:
    104x104x64 -> 4 ch -> 13x13x256, 52x52x128 -> 16 ch -> 13x13x256, 26x26x256 -> 32 ch -> 13x13x128;
    concatenated with the 1024 map; a 3x3 conv narrowed to 512 (Tiny-YOLO: 1024); ``depth`` extra
    1x1 convs of 512 ("deep", our default 2); the 1x1 prediction conv.

    Channel interpretation. METHODS.md gives the three stacks above and "concatenated (1792 ch)". With
    the squeezes as written the stacks give 256 + 256 + 128 = 640 ch, so the concatenation with the
    1024-ch final map is **1664 ch, not 1792**: no choice of maps makes 1792 with those channels
    (640 + 1024 = 1664, 640 + 512 = 1152, 640 + 1024 + 512 = 2176). 1792 = 1024 + 3 x 256, i.e. the
    26x26 map squeezed to 64 ch (not 32); ``stack_channels=[4, 16, 64]`` builds that variant. The
    default follows the per-map numbers. (The text also says 52x52x256; Tiny-YOLO's 52x52 map has 128
    ch. Only the squeeze's input changes, not the stacked channels.)

    ``stack_channels`` (default ``[4, 16, 32]``) scale with ``width`` by plain rounding (at least 1),
    not to multiples of 8, so width 1 keeps the paper's 4-channel squeeze; reorg multiplies them by
    64, 16 and 4 anyway. ``depth`` = number of extra 1x1 convs after the narrow 3x3 conv.
    ``binary``: binarize every conv but the first and the prediction conv, e.g.
    ``{"mode": "xnor", "keep_1x1": True}`` (see :func:`detkd.binary.layers.binarize_convs`).
    ``min_channels`` (default 8; a multiple of 8: the fewest channels of every backbone conv, which at width 0.5
    changes only the first) and ``stem`` (``"pool"``, Darknet's, or ``"conv"``, the first conv at stride 2 instead
    of the first max-pool) shape the backbone for CPU speed; see :mod:`detkd.models.backbones`. The defaults build
    the network described above.
    """
    if problems := option_problems(min_channels, stem):
        name, value, problem = problems[0]
        raise ConfigError(f"config key model.{name} = {value!r}: {problem}")
    backbone = tiny_darknet(width, min_channels, stem)
    squeeze = [max(1, round(c * width)) for c in (stack_channels or FYOLO_SQUEEZE)]
    neck = StackingNeck(
        backbone.out_channels, FYOLO_TAPS, backbone.strides, squeeze,
        wide=scale_channels(1024, width), narrow=scale_channels(512, width), depth=depth,
    )
    return _detector(backbone, neck, class_names, imgsz, anchors, binary)
