"""SSD detectors on torchvision's parts, following detkd's :class:`~detkd.models.detector.Detector` protocol.

:class:`SSDDetector` takes a backbone, a torchvision ``DefaultBoxGenerator`` and a head (torchvision
``SSDHead``/``SSDLiteHead``) like torchvision's ``SSD``, but splits its train/eval ``forward`` into
``forward`` (raw head outputs), ``decode`` and ``loss``, and takes images that are already
letterboxed to ``imgsz`` (no resizing inside).

Labels: detkd's labels are ``0..K-1``; torchvision's SSD reserves index 0 of ``cls_logits`` for
background, so class ``k`` is logit column ``k + 1``. The shift happens in ``loss`` and ``decode``
only; nothing outside sees the background column's index.

Input size: ``forward`` requires ``H == W == imgsz``. ``decode`` and ``loss`` receive only the head
outputs, so the default boxes must be those of one known size; they are computed once for ``imgsz``
and cached (see :meth:`SSDDetector.anchors`).

Builders (``@register_model``): ``ssd300_vgg16`` and ``ssdlite320_mobilenet_v3_large`` (torchvision's
architectures, optionally loading a torchvision checkpoint file) and ``ssd_cpu`` (the CPU-scale SSD of
:mod:`detkd.models.ssd_vgg`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou, clip_boxes_to_image

from detkd.errors import CheckpointError
from detkd.models.detector import Candidates, DecodeConfig, Detections, as_float32
from detkd.models.factory import register_model
from detkd.models.ssd_vgg import SSDVGGBackbone, ssd_anchor_generator
from detkd.models.torch_file import load_error_reason
from detkd.ops.nms import select_detections

__all__ = [
    "SSDDetector",
    "load_torchvision_ssd",
    "ssd300_vgg16",
    "ssd_cpu",
    "ssdlite320_mobilenet_v3_large",
    "torchvision_coco_class_names",
]

SSDOutputs = dict[str, torch.Tensor]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SSDDetector(nn.Module):
    """SSD with raw outputs, separate decode and loss (torchvision ``SSD`` pieces, detkd protocol).

    Args:
        backbone: ``Float[B, 3, S, S]`` (normalised) -> Tensor or ``OrderedDict`` of feature maps.
        anchor_generator: torchvision ``DefaultBoxGenerator`` matching the maps.
        head: returns ``{"bbox_regression": Float[B, N, 4], "cls_logits": Float[B, N, K + 1]}``
            from the list of maps (torchvision ``SSDHead`` / ``SSDLiteHead`` built with ``K + 1`` classes).
        class_names: the ``K`` classes, index = detkd label.
        imgsz: the square input size ``S``.
        image_mean, image_std: per-channel normalisation applied inside ``forward`` to ``[0, 1]`` input.
        iou_thresh: anchor/ground-truth IoU for a positive match (torchvision ``SSDMatcher``).
        neg_to_pos_ratio: hard negatives per positive in the classification loss (SSD: 3).

    Attributes:
        class_names, num_classes, imgsz: as above.
    """

    def __init__(
        self,
        backbone: nn.Module,
        anchor_generator: DefaultBoxGenerator,
        head: nn.Module,
        class_names: Sequence[str],
        imgsz: int,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        iou_thresh: float = 0.5,
        neg_to_pos_ratio: float = 3.0,
    ) -> None:
        super().__init__()
        if not class_names:
            raise ValueError("class_names must not be empty")
        self.backbone = backbone
        self.anchor_generator = anchor_generator
        self.head = head
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.imgsz = int(imgsz)
        # Not persistent: the builder sets them, and torchvision checkpoints have no such keys.
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in (image_mean, image_std))
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)
        self.box_coder = det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.matcher = det_utils.SSDMatcher(iou_thresh)
        self.iou_thresh = iou_thresh
        self.neg_to_pos_ratio = neg_to_pos_ratio
        self._grid_sizes: list[tuple[int, int]] | None = None
        self._anchors: torch.Tensor | None = None

    # ---- forward -------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(x)
        if isinstance(feats, torch.Tensor):
            return [feats]
        return list(feats.values()) if isinstance(feats, Mapping) else list(feats)

    def forward(self, images: torch.Tensor) -> SSDOutputs:
        """``images`` Float[B, 3, imgsz, imgsz] in [0, 1] -> ``{"bbox_regression": Float[B, N, 4]``
        (box-coder offsets to the default boxes), ``"cls_logits": Float[B, N, K + 1]}`` (column 0 =
        background), the same in train and eval mode."""
        tracing = torch.jit.is_tracing()
        if not tracing and tuple(images.shape[-2:]) != (self.imgsz, self.imgsz):
            size = tuple(images.shape[-2:])
            raise ValueError(f"expected images of {self.imgsz}x{self.imgsz} (letterboxed), got {size}")
        feats = self._features((images - self.image_mean) / self.image_std)
        if self._grid_sizes is None and not tracing:  # free here; decode/loss need it for the anchors
            self._grid_sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]
        out = self.head(feats)
        return {"bbox_regression": as_float32(out["bbox_regression"]), "cls_logits": as_float32(out["cls_logits"])}

    # ---- default boxes -------------------------------------------------------------------------
    def _probe_grid_sizes(self) -> list[tuple[int, int]]:
        """Feature map sizes at ``imgsz`` from one dummy forward (in eval mode, so BN stats stay put)."""
        modes = {m: m.training for m in self.modules()}
        param = next(self.parameters())
        self.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(1, 3, self.imgsz, self.imgsz, device=param.device, dtype=param.dtype)
                feats = self._features(x)
        finally:
            for m, mode in modes.items():
                m.training = mode
        return [(int(f.shape[-2]), int(f.shape[-1])) for f in feats]

    def anchors(self) -> torch.Tensor:
        """Default boxes ``Float[N, 4]`` xyxy in input pixels, in the order of the head outputs' N axis."""
        if self._anchors is None:
            if self._grid_sizes is None:
                self._grid_sizes = self._probe_grid_sizes()
            size = self.imgsz
            # The generator only reads shapes: zero-sized stand-ins avoid running the network.
            image_list = ImageList(torch.empty(0, 3, size, size), [(size, size)])
            maps = [torch.empty(0, 0, h, w) for h, w in self._grid_sizes]
            self._anchors = self.anchor_generator(image_list, maps)[0]
        return self._anchors

    def _anchors_for(self, outputs: SSDOutputs) -> torch.Tensor:
        anchors = self.anchors().to(outputs["bbox_regression"])
        if anchors.shape[0] != outputs["bbox_regression"].shape[1]:
            raise ValueError(f"outputs have {outputs['bbox_regression'].shape[1]} boxes per image, "
                             f"the {self.imgsz}px default boxes are {anchors.shape[0]}")
        return anchors

    # ---- decode --------------------------------------------------------------------------------
    def decode(self, outputs: SSDOutputs | Sequence[torch.Tensor], cfg: DecodeConfig | None = None) -> Detections:
        """Detections per image: ``boxes`` Float[M, 4] xyxy in input pixels (clipped to the image),
        ``scores`` Float[M] (softmax probability), ``labels`` Int64[M] in ``0..K-1``.

        ``outputs`` is ``forward``'s dict, or ``(bbox_regression, cls_logits)`` as an ONNX runtime returns them.
        """
        cfg = cfg or DecodeConfig()
        if not isinstance(outputs, Mapping):
            outputs = {"bbox_regression": torch.as_tensor(outputs[0]), "cls_logits": torch.as_tensor(outputs[1])}
        anchors = self._anchors_for(outputs)
        probs = F.softmax(outputs["cls_logits"], dim=-1)[..., 1:]  # drop background: column k is label k
        results = []
        for regression, scores in zip(outputs["bbox_regression"], probs):
            boxes = self.box_coder.decode_single(regression, anchors)
            boxes = clip_boxes_to_image(boxes, (self.imgsz, self.imgsz))
            results.append(select_detections(boxes, scores, cfg))
        return results

    def candidates(self, outputs: SSDOutputs) -> Candidates:
        """Every default box: decoded box, objectness ``1 - p(background)``, the foreground
        probabilities renormalised as the class distribution."""
        regression = outputs["bbox_regression"]
        bsz, num = regression.shape[:2]
        anchors = self._anchors_for(outputs)
        boxes = self.box_coder.decode_single(regression.reshape(-1, 4), anchors.repeat(bsz, 1)).reshape(bsz, num, 4)
        probs = F.softmax(outputs["cls_logits"], dim=-1)
        foreground = probs[..., 1:]
        return Candidates(boxes, 1.0 - probs[..., 0], foreground / foreground.sum(dim=-1, keepdim=True).clamp(min=1e-6))

    # ---- loss ----------------------------------------------------------------------------------
    def _match(self, target: Mapping[str, Any], anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classification target Int64[N] (0 background, ``label + 1`` object, -1 ignored) and the
        matched ground-truth box Float[N, 4] of every anchor (rows of non-positives are unused).

        Difficult boxes are left out of the matching, and anchors that overlap one by ``iou_thresh``
        or more are ignored rather than used as negatives: the model is neither taught to find
        difficult objects nor punished for finding them (VOC's evaluation ignores them too).
        """
        n = anchors.shape[0]
        boxes = torch.as_tensor(target["boxes"], dtype=anchors.dtype, device=anchors.device).reshape(-1, 4)
        labels = torch.as_tensor(target["labels"], dtype=torch.int64, device=anchors.device).reshape(-1)
        difficult = target.get("difficult")
        hard = (torch.as_tensor(difficult, dtype=torch.bool, device=anchors.device).reshape(-1)
                if difficult is not None else torch.zeros_like(labels, dtype=torch.bool))
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"target labels must be in 0..{self.num_classes - 1}, got {labels.tolist()}")
        cls_target = torch.zeros(n, dtype=torch.int64, device=anchors.device)
        matched_boxes = torch.zeros_like(anchors)
        if hard.any():
            ignored = box_iou(boxes[hard], anchors).max(dim=0).values >= self.iou_thresh
            cls_target[ignored] = -1
        easy_boxes, easy_labels = boxes[~hard], labels[~hard]
        if easy_boxes.numel():
            matched = self.matcher(box_iou(easy_boxes, anchors))  # >= 0: index of the matched box
            positive = matched >= 0
            cls_target[positive] = easy_labels[matched[positive]] + 1  # column 0 is background
            matched_boxes[positive] = easy_boxes[matched[positive]]
        return cls_target, matched_boxes

    def loss(self, outputs: SSDOutputs, targets: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """SSD MultiBox loss (torchvision's ``SSD.compute_loss``): smooth-L1 on the box-coder offsets of
        positive anchors, cross-entropy on positives plus the hardest negatives (``neg_to_pos_ratio``
        per positive, per image), both divided by the number of positives in the batch.

        ``targets``: per image ``boxes`` Float[M, 4] xyxy input pixels, ``labels`` Int64[M] in
        ``0..K-1``, optional ``difficult`` Bool[M]. An image without boxes has no positives and hence
        no negatives either (as in torchvision), so it adds nothing to the loss.
        """
        regression, logits = outputs["bbox_regression"], outputs["cls_logits"]
        anchors = self._anchors_for(outputs)
        matches = [self._match(t, anchors) for t in targets]
        cls_target = torch.stack([m[0] for m in matches])  # [B, N]
        positive = cls_target > 0
        box_loss = regression.new_zeros(())
        for b, (_, matched_boxes) in enumerate(matches):
            pos = positive[b]
            if pos.any():
                encoded = self.box_coder.encode_single(matched_boxes[pos], anchors[pos])
                box_loss = box_loss + F.smooth_l1_loss(regression[b, pos], encoded, reduction="sum")
        ce = F.cross_entropy(logits.flatten(0, 1), cls_target.clamp(min=0).flatten(), reduction="none")
        ce = ce.view_as(cls_target)
        # Hard negative mining: rank each image's background anchors by their loss.
        negative_loss = ce.detach().masked_fill(cls_target != 0, -float("inf"))
        rank = negative_loss.argsort(dim=1, descending=True).argsort(dim=1)
        num_negative = self.neg_to_pos_ratio * positive.sum(dim=1, keepdim=True)
        hard_negative = (rank < num_negative) & (cls_target == 0)
        num_positive = max(1, int(positive.sum()))
        return {
            "loss_box": box_loss / num_positive,
            "loss_cls": (ce[positive].sum() + ce[hard_negative].sum()) / num_positive,
        }


@register_model("ssd_cpu")
def ssd_cpu(class_names: list[str], imgsz: int = 300, width: float = 0.25, batch_norm: bool = True) -> SSDDetector:
    """CPU-scale SSD: width-scaled VGG16 SSD backbone (:class:`~detkd.models.ssd_vgg.SSDVGGBackbone`),
    SSD default boxes planned for ``imgsz`` and torchvision's ``SSDHead`` (3x3 convs). ImageNet
    mean/std normalisation inside ``forward``."""
    from torchvision.models.detection.ssd import SSDHead

    backbone = SSDVGGBackbone(imgsz, width, batch_norm)
    anchor_generator = ssd_anchor_generator(len(backbone.out_channels))
    head = SSDHead(backbone.out_channels, anchor_generator.num_anchors_per_location(), len(class_names) + 1)
    return SSDDetector(backbone, anchor_generator, head, class_names, imgsz)


# ---- torchvision architectures and checkpoints ---------------------------------------------------
_CLS_HEAD = "head.classification_head."


def torchvision_coco_class_names() -> list[str]:
    """The 90 class names of torchvision's COCO detectors (labels 1..90, "N/A" for unused ids),
    in detkd label order: pass them as ``class_names`` to use a COCO checkpoint's head as is."""
    from torchvision.models.detection.ssd import SSD300_VGG16_Weights

    return list(SSD300_VGG16_Weights.COCO_V1.meta["categories"][1:])


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: torchvision SSD checkpoint not found")
    try:  # weights_only: a checkpoint is data; never run code a downloaded pickle asks for
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a state_dict that torch.load(weights_only=True) accepts ({load_error_reason(exc)})") from exc
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # torchvision references' training checkpoints wrap it
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict (name -> tensor), got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_torchvision_ssd(model: SSDDetector, path: str | Path) -> list[str]:
    """Load a torchvision SSD ``state_dict`` file (e.g. ``ssd300_vgg16_coco-b556d3b4.pth``) into ``model``.

    Keys must match the model's exactly (our builders mirror torchvision's module names). When the
    class count differs (COCO checkpoints have 91 outputs with background), the classification-head
    tensors whose shapes differ are skipped with a warning and keep their fresh initialisation.

    Returns:
        The checkpoint keys that were skipped.

    Raises:
        FileNotFoundError: no such file. ValueError: not a weights-only state_dict, or keys/shapes
            that do not match (the message names the file and the first mismatches).
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    skipped = []
    for key in state.keys() & own.keys():
        if state[key].shape != own[key].shape:
            if key.startswith(_CLS_HEAD):
                skipped.append(key)
            else:
                problems.append(f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}")
    if problems:
        raise CheckpointError(f"{path} does not match {type(model).__name__}'s {len(own)} tensors; "
                         f"first mismatches: {'; '.join(sorted(problems)[:5])}")
    if skipped:
        warnings.warn(f"{path}: class count differs from the checkpoint ({model.num_classes} classes + background); "
                      f"classification head not loaded ({len(skipped)} tensors), it keeps its fresh init", stacklevel=2)
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return sorted(skipped)


def _vgg16_ssd_backbone() -> nn.Module:
    """torchvision's SSD300 VGG16 feature extractor with VGG's random init, no downloads.

    Built from ``vgg.make_layers`` instead of ``vgg16()``: the same conv layers, without the 120M
    classifier parameters that ``vgg16()`` initialises and SSD throws away (about 5 s on 2 cores).
    """
    from torchvision.models.detection.ssd import SSDFeatureExtractorVGG
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):  # VGG.__init__'s init
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return SSDFeatureExtractorVGG(features, highres=False)


@register_model("ssd300_vgg16")
def ssd300_vgg16(class_names: list[str], imgsz: int = 300, weights_path: str | None = None) -> SSDDetector:
    """torchvision's SSD300-VGG16 (COCO box AP 25.1 with its weights), caffe-style input scaling
    (``x * 255 - mean * 255``). Its default boxes are laid out for 300 px, so ``imgsz`` must be 300.
    ``weights_path``: a torchvision SSD300 checkpoint file, see :func:`load_torchvision_ssd`; with
    :func:`torchvision_coco_class_names` its COCO head is used as is. torchvision trained those
    weights on images stretched to 300x300, detkd feeds letterboxed ones: expect a somewhat lower AP."""
    from torchvision.models.detection.ssd import SSDHead

    if imgsz != 300:
        raise ValueError(f"ssd300_vgg16's default boxes (steps 8..300) are fixed for imgsz=300, got {imgsz}")
    backbone = _vgg16_ssd_backbone()
    anchor_generator = DefaultBoxGenerator(  # torchvision's SSD300 settings
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    head = SSDHead([512, 1024, 512, 256, 256, 256], anchor_generator.num_anchors_per_location(), len(class_names) + 1)
    model = SSDDetector(backbone, anchor_generator, head, class_names, imgsz,
                        image_mean=(0.48235, 0.45882, 0.40784), image_std=(1 / 255, 1 / 255, 1 / 255))
    if weights_path is not None:
        load_torchvision_ssd(model, weights_path)
    return model


@register_model("ssdlite320_mobilenet_v3_large")
def ssdlite320_mobilenet_v3_large(
    class_names: list[str], imgsz: int = 320, weights_path: str | None = None
) -> SSDDetector:
    """torchvision's SSDlite320-MobileNetV3-Large (COCO box AP 21.3 with its weights, trained at 320 px;
    other sizes work with default boxes from the map grid). Input scaled to [-1, 1]."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large as tv_ssdlite

    # Take the parts of torchvision's own model: cheap to build (no downloads with these arguments)
    # and guaranteed to have the checkpoint's module names and the reduced tail its weights use.
    tv = tv_ssdlite(weights=None, weights_backbone=None, num_classes=len(class_names) + 1)
    model = SSDDetector(tv.backbone, tv.anchor_generator, tv.head, class_names, imgsz,
                        image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    if weights_path is not None:
        load_torchvision_ssd(model, weights_path)
    return model
