"""Singh et al.'s stage 1: L1 sparsity induction, a global threshold, and the validation sweep.

:class:`SparsityModel` trains a detector with its own loss plus ``loss_l1 = lambda * sum |w|`` over
the conv weights of the chosen layer set (the head and layers outside the set are not penalised).
:func:`zero_below` then zeroes every weight of the set whose magnitude is below one global
threshold, and :func:`threshold_sweep` tries several thresholds on the validation split so the
largest one that costs at most ``max_drop`` mAP50 can be chosen (:func:`choose_threshold`).

BatchNorm. Singh et al. prune VGG without BatchNorm, where a weight's magnitude is its contribution.
Behind a BatchNorm it is not: the layer normalises its conv's output, so the scale of the conv's
weights is arbitrary (it differs per layer by orders of magnitude) and an L1 penalty on them only
shrinks that scale. With ``fold_bn=True`` (the default) every magnitude - the penalty, the global
threshold and its quantiles - is taken on the *BN-folded* weights ``W_o * |gamma_o| / sqrt(var_o + eps)``
(running variance, not differentiated), which is what the eval-mode network multiplies its input by.
Convs without a following BatchNorm use their weights as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from detkd.engine.model import DetectorModel
from detkd.models.detector import DecodeConfig
from detkd.prune.groups import followers

__all__ = ["SparsityModel", "choose_threshold", "effective_weights", "threshold_sweep", "weight_sparsity", "zero_below"]


def _weights(detector: nn.Module, names: Iterable[str]) -> list[torch.Tensor]:
    return [detector.get_submodule(name).weight for name in names]


def _following_bn(detector: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm2d right after conv ``conv_name`` in its ``Sequential`` (Conv2dNormActivation), if any."""
    after = followers(detector, conv_name)
    return after[0] if after and isinstance(after[0], nn.BatchNorm2d) else None


def effective_weights(detector: nn.Module, names: Iterable[str], fold_bn: bool = True) -> list[torch.Tensor]:
    """Per conv, ``Float[O, C, kh, kw]``: its weights, times ``|gamma| / sqrt(running_var + eps)`` of a
    following BatchNorm when ``fold_bn`` (gradients flow into the weights and gamma)."""
    out = []
    for name in names:
        weight = detector.get_submodule(name).weight
        bn = _following_bn(detector, name) if fold_bn else None
        if bn is not None and bn.weight is not None and bn.running_var is not None:
            scale = bn.weight.abs() / (bn.running_var.detach() + bn.eps).sqrt()
            weight = weight * scale.view(-1, 1, 1, 1)
        out.append(weight)
    return out


class SparsityModel(DetectorModel):
    """A :class:`DetectorModel` whose loss adds ``loss_l1 = weight * sum over convs of ||W||_1``
    (BN-folded weights when ``fold_bn``, see the module docstring).

    Args:
        detector: the trained detector to sparsify (its own loss terms stay as they are).
        layers: conv module names (relative to ``detector``) whose weights are penalised.
        weight: the L1 coefficient lambda (per unit of summed absolute weight).
    """

    def __init__(self, detector: nn.Module, layers: Sequence[str], weight: float, fold_bn: bool = True,
                 decode_cfg: DecodeConfig | None = None) -> None:
        super().__init__(detector, decode_cfg)
        if weight < 0:
            raise ValueError(f"L1 weight must be >= 0, got {weight}")
        self.layers = list(layers)
        self.l1_weight = float(weight)
        self.fold_bn = fold_bn
        _weights(detector, self.layers)  # fail now on a wrong name

    def forward(self, images: torch.Tensor, targets: list[dict[str, Any]] | None = None, mode: str = "tensor") -> Any:  # type: ignore[override]
        out = super().forward(images, targets, mode)
        if mode == "loss":
            weights = effective_weights(self.detector, self.layers, self.fold_bn)
            out["loss_l1"] = self.l1_weight * sum(w.abs().sum() for w in weights)
        return out


def weight_sparsity(detector: nn.Module, layers: Iterable[str]) -> float:
    """Fraction of exactly-zero weights over the convs ``layers``."""
    weights = _weights(detector, layers)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(1, sum(w.numel() for w in weights))


@torch.no_grad()
def zero_below(detector: nn.Module, layers: Iterable[str], threshold: float, fold_bn: bool = True) -> float:
    """Set every weight of the convs ``layers`` whose (BN-folded when ``fold_bn``) magnitude is below
    ``threshold`` to zero, in place; returns the resulting fraction of zero weights over those convs."""
    layers = list(layers)
    for weight, effective in zip(_weights(detector, layers), effective_weights(detector, layers, fold_bn), strict=True):
        weight.masked_fill_(effective.abs() < threshold, 0.0)
    return weight_sparsity(detector, layers)


def threshold_sweep(
    detector: nn.Module, layers: Sequence[str], thresholds: Sequence[float],
    evaluate: Callable[[nn.Module], dict[str, float]], fold_bn: bool = True,
) -> list[dict[str, float]]:
    """``evaluate`` (returns ``{"AP50", "AP"}``) a thresholded copy of ``detector`` per threshold.

    Returns one row per threshold: ``threshold``, ``sparsity`` (zero fraction in ``layers``),
    ``mAP50``, ``AP``; threshold 0 (the sparse model as trained) is always included first.
    """
    rows = []
    for threshold in tqdm([0.0, *sorted(t for t in thresholds if t > 0)], desc="threshold sweep", disable=None, leave=False):
        model = copy.deepcopy(detector)
        sparsity = zero_below(model, layers, threshold, fold_bn)
        metrics = evaluate(model)
        rows.append({"threshold": float(threshold), "sparsity": sparsity, "mAP50": float(metrics["AP50"]), "AP": float(metrics["AP"])})
    return rows


def choose_threshold(rows: Sequence[dict[str, float]], max_drop: float) -> dict[str, float]:
    """The sweep row with the largest threshold whose mAP50 is at most ``max_drop`` below the
    unthresholded model's (the row with threshold 0)."""
    base = next((r for r in rows if r["threshold"] == 0.0), None)
    if base is None:
        raise ValueError("the sweep has no threshold-0 row to compare with")
    ok = [r for r in rows if r["mAP50"] >= base["mAP50"] - max_drop]
    return max(ok, key=lambda r: r["threshold"])
