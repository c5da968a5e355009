"""Post-processing shared by every detector's ``decode``: thresholds, top-k and per-class NMS."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from detkd.options import DecodeConfig

__all__ = ["select_detections"]


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, cfg: DecodeConfig) -> dict[str, torch.Tensor]:
    """Per-class NMS over candidates of one image.

    Args:
        boxes: Float[N, 4] xyxy candidate boxes (one per anchor, shared by all classes).
        scores: Float[N, K] per-class scores (background already removed).
        cfg: thresholds; every (anchor, class) pair above ``score_thr`` is a candidate and
            ``pre_nms_topk`` caps how many go to NMS.

    Returns:
        ``boxes`` Float[M, 4], ``scores`` Float[M], ``labels`` Int64[M] in ``0..K-1``, best first,
        M <= ``cfg.max_det``.
    """
    num_classes = scores.shape[1]
    flat = scores.flatten()
    idx = torch.nonzero(flat > cfg.score_thr).squeeze(1)
    kept = flat[idx]
    if kept.numel() > cfg.pre_nms_topk:
        kept, order = kept.topk(cfg.pre_nms_topk)
        idx = idx[order]
    labels = idx % num_classes
    cand = boxes[idx // num_classes]
    keep = batched_nms(cand, kept, labels, cfg.nms_iou)[: cfg.max_det]
    return {"boxes": cand[keep], "scores": kept[keep], "labels": labels[keep]}
