"""Box-aware image transforms: a letterbox to a square network input, then albumentations.

The letterbox (resize the longer side to ``imgsz``, pad right/bottom with grey) is our own few
lines so that its exact scale is known: predictions map back to the original image with
``box / scale``. Random augmentation (scale/translate, flip, colour) is albumentations; boxes that
leave the canvas are clipped, and boxes with less than ``min_visibility`` of their area left are
dropped, so every returned box is valid.

Arrays in and out: image ``uint8[H, W, 3]`` RGB; boxes ``float32[N, 4]`` xyxy absolute pixels;
labels ``int64[N]``; difficult ``bool[N]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np

from detkd.options import AugmentConfig  # re-exported: the transforms take it

__all__ = ["AugmentConfig", "DetectionTransform", "Transformed", "build_eval_transform", "build_train_transform", "letterbox"]

PAD_VALUE = 114  # grey, the usual letterbox fill


@dataclass
class Transformed:
    """Output of a :class:`DetectionTransform`; ``scale`` = (sx, sy) from original to output pixels."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    scale: tuple[float, float]
    extra_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    extra_keep: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def letterbox(image: np.ndarray, boxes: np.ndarray, imgsz: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Resize so the longer side is ``imgsz`` (aspect kept), pad right and bottom to ``imgsz x imgsz``.

    Returns:
        ``(image uint8[imgsz, imgsz, 3], boxes float32[N, 4] scaled, (sx, sy))``.
    """
    height, width = image.shape[:2]
    ratio = imgsz / max(height, width)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp) if (new_w, new_h) != (width, height) else image
    canvas = np.full((imgsz, imgsz, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    sx, sy = new_w / width, new_h / height
    scaled = (np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], dtype=np.float32))
    return canvas, scaled, (sx, sy)


class DetectionTransform:
    """Letterbox to ``imgsz`` then an optional albumentations pipeline (``None`` = eval)."""

    def __init__(self, imgsz: int, augment: A.Compose | None = None) -> None:
        if imgsz < 8:
            raise ValueError(f"imgsz must be >= 8, got {imgsz}")
        self.imgsz = imgsz
        self.augment = augment

    def reseed(self, seed: int | None) -> None:
        """Restart the augmentation's random stream (None: fresh entropy).

        DataLoader workers call this with distinct seeds. One generator is shared by the whole
        pipeline on purpose: albumentations' ``Compose(seed=...)`` seeds every child transform
        with the same value, which makes their apply/skip decisions identical (flip exactly
        when affine, ...).
        """
        if self.augment is not None:
            self.augment.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, difficult: np.ndarray,
                 extra_boxes: np.ndarray | None = None) -> Transformed:
        """Letterbox (and augment) ``image`` with its boxes (xyxy file pixels). ``extra_boxes``
        Float[M, 4] (a cached teacher's candidates) move exactly like the ground truth; the output's
        ``extra_keep`` says which rows survived (in order) and ``extra_boxes`` holds them."""
        num_gt = len(boxes)
        extra = np.zeros((0, 4), np.float32) if extra_boxes is None else np.asarray(extra_boxes, np.float32).reshape(-1, 4)
        image, all_boxes, scale = letterbox(image, np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4), extra]), self.imgsz)
        all_boxes = np.clip(all_boxes, 0, self.imgsz)  # rounding may push an edge a hair outside
        slots = np.concatenate([np.full(num_gt, -1), np.arange(len(extra))]).astype(np.int64)
        labels = np.concatenate([np.asarray(labels, np.int64).reshape(-1), np.zeros(len(extra), np.int64)])
        difficult = np.concatenate([np.asarray(difficult, bool).reshape(-1), np.zeros(len(extra), bool)])
        if self.augment is not None:
            out = self.augment(image=image, bboxes=all_boxes, labels=labels, difficult=difficult, slots=slots)
            image, all_boxes = out["image"], np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels, difficult, slots = out["labels"], out["difficult"], np.asarray(out["slots"], np.int64)
        gt = slots < 0
        return Transformed(
            image=np.ascontiguousarray(image),
            boxes=all_boxes[gt].astype(np.float32),
            labels=np.asarray(labels, dtype=np.int64).reshape(-1)[gt],
            difficult=np.asarray(difficult, dtype=bool).reshape(-1)[gt],
            scale=scale,
            extra_boxes=all_boxes[~gt].astype(np.float32),
            extra_keep=slots[~gt],
        )


def build_train_transform(imgsz: int, cfg: AugmentConfig | None = None, seed: int | None = None) -> DetectionTransform:
    """Letterbox + random affine scale/translate + horizontal flip + colour jitter."""
    cfg = cfg or AugmentConfig()
    augment = A.Compose(
        [
            A.Affine(
                scale=cfg.scale,
                translate_percent=(-cfg.translate, cfg.translate),
                border_mode=cv2.BORDER_CONSTANT,
                fill=PAD_VALUE,
                p=cfg.affine_p,
            ),
            A.HorizontalFlip(p=cfg.hflip_p),
            A.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.color_p),
        ],
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels", "difficult", "slots"],  # slots: -1 ground truth, k extra box k
            min_visibility=cfg.min_visibility,
            min_width=cfg.min_size,
            min_height=cfg.min_size,
            clip=True,
        ),
    )
    transform = DetectionTransform(imgsz, augment)
    transform.reseed(seed)
    return transform


def build_eval_transform(imgsz: int) -> DetectionTransform:
    """Letterbox only (deterministic)."""
    return DetectionTransform(imgsz, None)
