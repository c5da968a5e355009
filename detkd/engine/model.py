"""mmengine glue: any detkd detector as an mmengine ``BaseModel`` with a data preprocessor.

The wrapper adds nothing to the detector's maths: ``loss`` mode calls ``detector.loss``,
``predict`` mode calls ``detector.decode`` and maps boxes back to the original image pixels with
the dataset's letterbox ``scale``, ``tensor`` mode returns the raw outputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from mmengine.model import BaseDataPreprocessor, BaseModel

from detkd.models.detector import DecodeConfig

__all__ = ["DetDataPreprocessor", "DetectorModel", "to_original_pixels"]

Batch = tuple[torch.Tensor | list[torch.Tensor], list[dict[str, Any]]]


class DetDataPreprocessor(BaseDataPreprocessor):
    """``(uint8 images, targets)`` from :func:`~detkd.data.collate.collate_detection` →
    ``(float32 images in [0, 1] on the model's device, targets with tensors on that device)``."""

    def forward(self, data: Batch, training: bool = False) -> tuple[torch.Tensor, list[dict[str, Any]]]:  # type: ignore[override]
        images, targets = data
        if isinstance(images, list):
            images = torch.stack(images)  # sizes differ only without a letterbox transform
        images = images.to(self.device, non_blocking=True).float().div_(255.0)
        moved = [{k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        return images, moved


def to_original_pixels(det: dict[str, torch.Tensor], target: dict[str, Any]) -> dict[str, Any]:
    """Boxes from network-input pixels to the image file's pixels (undo the letterbox), clipped."""
    sx, sy = target["scale"]
    height, width = target["orig_size"]
    boxes = det["boxes"].detach().float().cpu() / torch.tensor([sx, sy, sx, sy])
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return {
        "image_id": target["image_id"],
        "boxes": boxes,
        "scores": det["scores"].detach().float().cpu(),
        "labels": det["labels"].detach().cpu(),
    }


class DetectorModel(BaseModel):
    """mmengine model around a detkd detector (see :mod:`detkd.models.detector`)."""

    def __init__(self, detector: nn.Module, decode_cfg: DecodeConfig | None = None) -> None:
        super().__init__(data_preprocessor=DetDataPreprocessor())
        self.detector = detector
        self.decode_cfg = decode_cfg or DecodeConfig()

    def forward(  # type: ignore[override]
        self, images: torch.Tensor, targets: list[dict[str, Any]] | None = None, mode: str = "tensor"
    ) -> Any:
        outputs = self.detector(images)
        if mode == "loss":
            if targets is None:
                raise ValueError("mode='loss' needs targets")
            return self.detector.loss(outputs, targets)
        if mode == "predict":
            dets = self.detector.decode(outputs, self.decode_cfg)
            return [to_original_pixels(d, t) for d, t in zip(dets, targets or [], strict=True)]
        if mode == "tensor":
            return outputs
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', not {mode!r}")
