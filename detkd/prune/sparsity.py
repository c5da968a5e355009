"""Singh et al.'s stage 1: sparsity induction, a global threshold, and the validation sweep.

:class:`SparsityModel` trains a detector with its own loss plus a sparsity penalty ``loss_sparsity``
over the convs of the chosen layer set (the head and layers outside the set are not penalised), of
one of three kinds (``prune.sparsity.kind``):

- ``l1`` (Singh et al., the default): ``lambda * sum |w|`` over every weight. It zeroes single
  weights; a filter empties only when all of its weights do.
- ``group`` (group lasso, Wen et al. 2016): ``lambda * sum over filters of ||W_o||_2``. The gradient
  of a norm has the same size however small the filter is, so weak filters go to zero as a whole.
- ``bn_scale`` (network slimming, Liu et al. 2017): ``lambda * sum |gamma_o|`` over the BatchNorm
  scales that follow the convs; a zero scale switches the whole channel off. Convs without a
  following BatchNorm fall back to the group term.

``growth`` multiplies ``lambda`` by ``growth ** epoch`` (a penalty that grows while training goes on).

Cost weighting (``prune.sparsity.cost``). With one ``lambda`` for every filter the penalty empties
the filters the loss defends least, and on an SSD those sit in the wide low-resolution layers
(conv4/conv5/fc6), where a filter costs little compute: many filters go, FLOPs and latency barely
move. ``costs`` gives each conv a weight, its filters' per-filter multiply-adds
(:func:`~detkd.prune.latency.filter_flops`, ``cost="flops"``) or measured ms saved per filter
(:func:`~detkd.prune.latency.latency_slopes`, ``cost="latency"``); :func:`cost_weights` scales them
so their mean over the set's filters is 1 (``lambda`` keeps its meaning on average), and conv ``n``'s
term is multiplied by its weight in the penalty and in the proximal step: a weighted group lasso
that spends the sparsity budget where removal saves the most. ``cost_power`` raises the costs to a
power first: on an SSD the per-filter FLOPs span about 1000x (conv1_2 against the extra layers), so
no single ``lambda`` both empties filters in the mid layers and spares the first ones; square roots
(``cost_power=0.5``) span about 30x.

Gradient or proximal. By default the penalty joins the loss and the optimizer follows its gradient.
Under Adam(W) that cannot empty a filter in a short run: Adam divides every parameter's step by its
gradient's running RMS, so no parameter moves more than about ``lr`` per step however large the
penalty is, and a filter (or BN scale) travels at most ``sum_t lr_t`` over the whole stage.
``proximal=True`` (:func:`proximal_step`, as in ISTA / Huang & Wang's sparse structure selection)
leaves the penalty out of the loss and, after every optimizer step, applies its proximal operator
with step ``lr_t * lambda``: ``l1`` soft-thresholds each (BN-folded) weight, ``group`` shrinks each
filter's (BN-folded) norm by that step and ``bn_scale`` each ``|gamma|``, setting to exactly zero what
falls below it. The shrink is outside Adam's normalisation, so ``lambda`` is in units of the loss's
own largest push: at ``lambda = 1`` a filter whose loss gradient keeps one sign holds its ground, and
one the loss does not defend shrinks by ``lr_t`` per step.
Every training step also logs ``filters_empty``: the fraction of the set's filters whose BN-folded
L2 norm is below ``EMPTY_TOLERANCE`` times their layer's mean filter norm.
:func:`zero_below` then zeroes every weight of the set whose magnitude is below one global
threshold, and :func:`threshold_sweep` tries several thresholds on the validation split so the
largest one that costs at most ``max_drop`` mAP50 can be chosen (:func:`choose_threshold`).

Threshold scope (``prune.sweep.scope``). ``global`` (the paper): one magnitude for the whole set.
Its zeros land where the magnitudes are smallest, on an SSD the deep, parameter-heavy convs
(conv4_1 to fc7), so a parameter cut barely moves FLOPs or latency. ``layer``: the threshold is a
quantile ``q`` and every conv zeroes its own smallest ``q`` of weights (:func:`layer_thresholds`), so
Singh's selection then thins every layer, the early high-resolution ones included.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from detkd.engine.model import DetectorModel
from detkd.models.detector import DecodeConfig
from detkd.prune.groups import followers

__all__ = ["EMPTY_TOLERANCE", "SPARSITY_KINDS", "THRESHOLD_SCOPES", "SparsityModel", "choose_threshold", "cost_weights",
           "effective_weights",
           "empty_filter_fraction", "filter_norms", "following_bn", "l1_matched_weight", "proximal_step", "sparsity_penalty",
           "layer_thresholds", "resolve_threshold", "threshold_sweep", "weight_sparsity", "zero_below"]

THRESHOLD_SCOPES = ("global", "layer")
Threshold = float | Mapping[str, float]  # one magnitude for every conv, or one per conv name

SPARSITY_KINDS = ("l1", "group", "bn_scale")
EMPTY_TOLERANCE = 1e-2  # a filter is empty below this fraction of its layer's mean (BN-folded) filter norm


def _weights(detector: nn.Module, names: Iterable[str]) -> list[torch.Tensor]:
    return [detector.get_submodule(name).weight for name in names]


def following_bn(detector: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm2d right after conv ``conv_name`` in its ``Sequential`` (Conv2dNormActivation), if any."""
    after = followers(detector, conv_name)
    return after[0] if after and isinstance(after[0], nn.BatchNorm2d) else None


def _fold_scale(bn: nn.BatchNorm2d | None) -> torch.Tensor | None:
    """``Float[O]``: ``|gamma| / sqrt(running_var + eps)`` of ``bn`` (not differentiated through the
    variance), or None when there is no BatchNorm with a scale and running statistics."""
    if bn is None or bn.weight is None or bn.running_var is None:
        return None
    return bn.weight.abs() / (bn.running_var.detach() + bn.eps).sqrt()


def effective_weights(detector: nn.Module, names: Iterable[str], fold_bn: bool = True) -> list[torch.Tensor]:
    """Per conv, ``Float[O, C, kh, kw]``: its weights, times ``|gamma| / sqrt(running_var + eps)`` of a
    following BatchNorm when ``fold_bn`` (gradients flow into the weights and gamma)."""
    out = []
    for name in names:
        weight = detector.get_submodule(name).weight
        scale = _fold_scale(following_bn(detector, name)) if fold_bn else None
        if scale is not None:
            weight = weight * scale.view(-1, 1, 1, 1)
        out.append(weight)
    return out


def filter_norms(detector: nn.Module, names: Iterable[str], fold_bn: bool = True) -> list[torch.Tensor]:
    """Per conv, ``Float[O]``: the L2 norm of each output filter's (BN-folded when ``fold_bn``) weights."""
    return [w.flatten(1).norm(dim=1) for w in effective_weights(detector, names, fold_bn)]


def cost_weights(detector: nn.Module, names: Sequence[str], costs: Mapping[str, float],
                 power: float = 1.0) -> dict[str, float]:
    """Per conv of ``names``, ``costs[n] ** power`` divided by the filter-weighted mean of the set
    (``sum_n O_n * costs[n] ** power / sum_n O_n``, ``O_n`` its filter count): weights whose mean over
    all the set's filters is 1. Costs must be > 0; ``power`` in [0, 1] compresses their range (1: the
    costs as they are, 0.5: their square roots, 0: every conv alike)."""
    counts = {n: detector.get_submodule(n).weight.shape[0] for n in names}
    missing = [n for n in names if n not in costs]
    if missing:
        raise KeyError(f"no cost for conv(s) {missing[:3]}")
    if any(float(costs[n]) <= 0 for n in names):
        raise ValueError("filter costs must be > 0")
    if power < 0:
        raise ValueError(f"cost power must be >= 0, got {power}")
    scaled = {n: float(costs[n]) ** power for n in names}
    mean = sum(counts[n] * scaled[n] for n in names) / max(1, sum(counts.values()))
    return {n: scaled[n] / mean for n in names}


def sparsity_penalty(detector: nn.Module, names: Sequence[str], kind: str = "l1", fold_bn: bool = True,
                     weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """The penalty of ``kind`` (see the module docstring; without lambda) over the convs ``names``: a scalar
    that gradients flow through (into the conv weights, and the BatchNorm scales where they count).
    ``weights``: per conv, a factor on its term (:func:`cost_weights`); ``None``: 1 for every conv."""
    if kind not in SPARSITY_KINDS:
        raise ValueError(f"sparsity kind must be one of {SPARSITY_KINDS}, not {kind!r}")
    total = torch.zeros(())
    for name in names:
        if kind == "l1":
            term = effective_weights(detector, [name], fold_bn)[0].abs().sum()
        elif kind == "group":
            term = filter_norms(detector, [name], fold_bn)[0].sum()
        else:  # bn_scale
            bn = following_bn(detector, name)
            if bn is not None and bn.weight is not None:
                term = bn.weight.abs().sum()
            else:
                term = filter_norms(detector, [name], fold_bn=False)[0].sum()
        total = total + (term if weights is None else float(weights[name]) * term)
    return total


def _soft_threshold_(values: torch.Tensor, threshold: torch.Tensor | float) -> None:
    """In place: ``sign(v) * max(|v| - threshold, 0)``."""
    values.copy_(values.sign() * (values.abs() - threshold).clamp_min(0.0))


@torch.no_grad()
def proximal_step(detector: nn.Module, names: Sequence[str], kind: str, step: float, fold_bn: bool = True,
                  weights: Mapping[str, float] | None = None) -> None:
    """In place: the proximal operator of ``step * penalty`` (:func:`sparsity_penalty` of ``kind`` over
    the convs ``names``, BN-folded magnitudes when ``fold_bn``), which sets to exactly zero what the
    penalty would only push towards zero.

    - ``l1``: every folded weight ``F = W * s`` (``s = |gamma| / sigma``) is soft-thresholded by
      ``step``, i.e. ``W`` by ``step / s`` (weights of a channel with ``s = 0`` are left as they are).
    - ``group``: every filter's folded norm ``||F_o||`` shrinks by ``step`` (to 0 below it). Behind a
      BatchNorm the filter's scale is carried by ``gamma_o`` (training-mode BN renormalises ``W_o``), so
      ``gamma_o`` is scaled by ``max(0, 1 - step / ||F_o||)``; without one, ``W_o`` is.
    - ``bn_scale``: every ``|gamma_o|`` shrinks by ``step``; a conv without a BatchNorm gets the group
      step on its raw weights (as in :func:`sparsity_penalty`).

    ``weights``: per conv, a factor on ``step`` (:func:`cost_weights`), the proximal operator of the
    weighted penalty; ``None``: 1 for every conv.
    """
    if kind not in SPARSITY_KINDS:
        raise ValueError(f"sparsity kind must be one of {SPARSITY_KINDS}, not {kind!r}")
    if step < 0:
        raise ValueError(f"proximal step must be >= 0, got {step}")
    for name in names:
        layer_step = step if weights is None else step * float(weights[name])
        weight = detector.get_submodule(name).weight
        bn = following_bn(detector, name)
        if kind == "bn_scale" and bn is not None and bn.weight is not None:
            _soft_threshold_(bn.weight, layer_step)
            continue
        scale = _fold_scale(bn) if fold_bn else None
        if kind == "l1":  # threshold 0 (no change) behind a zero scale
            per_filter = layer_step if scale is None else torch.where(scale > 0, layer_step / scale.clamp_min(1e-30), 0.0).view(-1, 1, 1, 1)
            _soft_threshold_(weight, per_filter)
            continue
        norms = weight.flatten(1).norm(dim=1)
        if scale is not None and kind == "group":  # the filter's scale lives in gamma
            bn.weight.mul_(_shrink_factor(norms * scale, layer_step))  # type: ignore[union-attr]
        else:
            weight.mul_(_shrink_factor(norms, layer_step).view(-1, 1, 1, 1))


def _shrink_factor(norms: torch.Tensor, step: float) -> torch.Tensor:
    """``Float[O]``: ``max(0, 1 - step / norm)``, the factor that shrinks each norm by ``step`` (to 0 below it)."""
    return (1.0 - step / norms.clamp_min(1e-30)).clamp_min(0.0)


@torch.no_grad()
def l1_matched_weight(detector: nn.Module, names: Sequence[str], kind: str, l1_weight: float) -> float:
    """lambda of penalty ``kind`` that pulls the filters of convs ``names`` as hard, on average, as the L1
    penalty on BN-folded weights (``fold_bn``, the default) does at ``l1_weight`` (the kinds' sums have
    different scales, so one lambda does not fit all).

    L1 pulls a filter of ``n`` (BN-folded) weights with a gradient of norm ``sqrt(n)``, the group term with
    norm 1: ``group`` gets ``l1_weight`` times the mean of ``sqrt(n)`` over the filters. L1 on BN-folded
    weights pulls a BatchNorm scale with ``|W|_1 / sigma = |W_folded|_1 / |gamma|``, the BN-scale term with 1:
    ``bn_scale`` gets ``l1_weight`` times ``sum |W_folded|_1 / sum |gamma|`` (the |gamma|-weighted mean of that
    ratio, over the convs followed by a BatchNorm). ``l1`` returns ``l1_weight``.
    """
    if kind not in SPARSITY_KINDS:
        raise ValueError(f"sparsity kind must be one of {SPARSITY_KINDS}, not {kind!r}")
    if kind == "l1":
        return float(l1_weight)
    if kind == "group":
        roots = [torch.full((w.shape[0],), float(w[0].numel()) ** 0.5) for w in _weights(detector, names)]
        return float(l1_weight) * float(torch.cat(roots).mean()) if roots else float(l1_weight)
    folded = gamma = 0.0
    for name in names:  # bn_scale
        bn = following_bn(detector, name)
        if bn is not None and bn.weight is not None:
            folded += float(effective_weights(detector, [name], fold_bn=True)[0].abs().sum())
            gamma += float(bn.weight.abs().sum())
    return float(l1_weight) * folded / gamma if gamma > 0 else float(l1_weight)


@torch.no_grad()
def empty_filter_fraction(detector: nn.Module, names: Iterable[str], tolerance: float = EMPTY_TOLERANCE,
                          fold_bn: bool = True) -> float:
    """Fraction of the filters of convs ``names`` whose (BN-folded) L2 norm is below ``tolerance``
    times the mean filter norm of their conv: filters that a threshold would remove whole."""
    empty = total = 0
    for norms in filter_norms(detector, names, fold_bn):
        norms = norms.float()
        empty += int((norms < tolerance * norms.mean().clamp_min(1e-12)).sum())
        total += norms.numel()
    return empty / max(1, total)


class SparsityModel(DetectorModel):
    """A :class:`DetectorModel` whose loss adds ``loss_sparsity = weight * growth ** epoch * penalty``
    (:func:`sparsity_penalty` of ``kind``; BN-folded weights when ``fold_bn``, see the module docstring).

    Args:
        detector: the trained detector to sparsify (its own loss terms stay as they are).
        layers: conv module names (relative to ``detector``) whose weights are penalised.
        weight: the coefficient lambda (per unit of the summed penalty).
        kind: ``l1``, ``group`` or ``bn_scale``.
        growth: per-epoch factor of lambda (1: constant); the Runner reports the epoch through
            :meth:`set_epoch` (:class:`~detkd.engine.hooks.EpochSeedHook`).
        proximal: leave the penalty out of the loss (it is logged as ``sparsity_penalty``) and apply
            :func:`proximal_step` with step ``lr * lambda`` after every optimizer step
            (:meth:`after_optimizer_step`, called by :class:`~detkd.engine.hooks.AfterStepHook`).
        costs: per conv of ``layers``, the cost of one of its filters (FLOPs or ms, any unit); each
            conv's term is weighted by :func:`cost_weights` of them. ``None``: every conv alike.
        cost_power: the exponent on ``costs`` (:func:`cost_weights`).
    """

    def __init__(self, detector: nn.Module, layers: Sequence[str], weight: float, fold_bn: bool = True,
                 decode_cfg: DecodeConfig | None = None, kind: str = "l1", growth: float = 1.0,
                 proximal: bool = False, costs: Mapping[str, float] | None = None,
                 cost_power: float = 1.0) -> None:
        super().__init__(detector, decode_cfg)
        if weight < 0:
            raise ValueError(f"sparsity weight must be >= 0, got {weight}")
        if kind not in SPARSITY_KINDS:
            raise ValueError(f"sparsity kind must be one of {SPARSITY_KINDS}, not {kind!r}")
        if growth <= 0:
            raise ValueError(f"sparsity growth must be > 0, got {growth}")
        self.layers = list(layers)
        self.penalty_weight = float(weight)
        self.fold_bn, self.kind, self.growth, self.proximal = fold_bn, kind, float(growth), bool(proximal)
        self.epoch = 0
        _weights(detector, self.layers)  # fail now on a wrong name
        self.cost_weights = None if costs is None else cost_weights(detector, self.layers, costs, cost_power)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def current_weight(self) -> float:
        """lambda at the current epoch."""
        return self.penalty_weight * self.growth ** self.epoch

    def forward(self, images: torch.Tensor, targets: list[dict[str, Any]] | None = None, mode: str = "tensor") -> Any:  # type: ignore[override]
        out = super().forward(images, targets, mode)
        if mode == "loss":
            if self.proximal:  # logged, not differentiated: after_optimizer_step applies it
                with torch.no_grad():
                    out["sparsity_penalty"] = sparsity_penalty(self.detector, self.layers, self.kind, self.fold_bn,
                                                               self.cost_weights)
            else:
                out["loss_sparsity"] = self.current_weight * sparsity_penalty(self.detector, self.layers, self.kind,
                                                                              self.fold_bn, self.cost_weights)
            out["filters_empty"] = torch.tensor(empty_filter_fraction(self.detector, self.layers, fold_bn=self.fold_bn))
        return out

    def after_optimizer_step(self, lr: float) -> None:
        """With ``proximal``: :func:`proximal_step` of step ``lr * lambda`` (at the current epoch)."""
        if self.proximal:
            proximal_step(self.detector, self.layers, self.kind, lr * self.current_weight, self.fold_bn,
                          self.cost_weights)


def weight_sparsity(detector: nn.Module, layers: Iterable[str]) -> float:
    """Fraction of exactly-zero weights over the convs ``layers``."""
    weights = _weights(detector, layers)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(1, sum(w.numel() for w in weights))


@torch.no_grad()
def layer_thresholds(detector: nn.Module, layers: Sequence[str], quantile: float, fold_bn: bool = True) -> dict[str, float]:
    """Per conv of ``layers``, the magnitude below which its own smallest ``quantile`` of (BN-folded when
    ``fold_bn``) weights lie: the ``floor(quantile * n)``-th smallest of its ``n`` magnitudes (so
    :func:`zero_below` zeroes at most that many, ties aside); ``quantile >= 1``: above every weight."""
    out = {}
    for name, weight in zip(layers, effective_weights(detector, layers, fold_bn), strict=True):
        magnitudes = weight.detach().abs().flatten().sort().values
        if quantile >= 1.0:
            out[name] = float(magnitudes[-1]) * 1.001 + 1e-12
        else:
            out[name] = float(magnitudes[int(max(0.0, quantile) * magnitudes.numel())])
    return out


def resolve_threshold(detector: nn.Module, layers: Sequence[str], value: float, scope: str = "global",
                      fold_bn: bool = True) -> Threshold:
    """What :func:`zero_below` takes for a sweep value: the magnitude itself (``scope="global"``), or, with
    ``scope="layer"``, ``value`` read as a quantile and turned into one magnitude per conv (:func:`layer_thresholds`)."""
    if scope not in THRESHOLD_SCOPES:
        raise ValueError(f"scope must be one of {THRESHOLD_SCOPES}, not {scope!r}")
    return layer_thresholds(detector, layers, value, fold_bn) if scope == "layer" else float(value)


@torch.no_grad()
def zero_below(detector: nn.Module, layers: Iterable[str], threshold: Threshold, fold_bn: bool = True) -> float:
    """Set every weight of the convs ``layers`` whose (BN-folded when ``fold_bn``) magnitude is below
    ``threshold`` (one magnitude, or a mapping from conv name to its own), or exactly zero, to zero, in
    place; returns the resulting fraction of zero weights over those convs. "Exactly zero" matters at threshold 0 with ``fold_bn``: a filter whose BatchNorm
    scale the penalty set to 0 (the group and BN-scale proximal steps do) is empty in effect while its
    raw weights are not, and Singh's selection reads the raw zeros; the output does not change."""
    layers = list(layers)
    for name, weight, effective in zip(layers, _weights(detector, layers), effective_weights(detector, layers, fold_bn), strict=True):
        below = threshold[name] if isinstance(threshold, Mapping) else threshold
        weight.masked_fill_((effective.abs() < below) | (effective == 0), 0.0)
    return weight_sparsity(detector, layers)


def threshold_sweep(
    detector: nn.Module, layers: Sequence[str], thresholds: Sequence[float],
    evaluate: Callable[[nn.Module], dict[str, float]], fold_bn: bool = True, scope: str = "global",
) -> list[dict[str, float]]:
    """``evaluate`` (returns ``{"AP50", "AP"}``) a thresholded copy of ``detector`` per threshold
    (with ``scope="layer"`` each is a quantile of every conv's own magnitudes: :func:`resolve_threshold`).

    Returns one row per threshold: ``threshold``, ``sparsity`` (zero fraction in ``layers``),
    ``mAP50``, ``AP``; threshold 0 (the sparse model as trained) is always included first.
    """
    rows = []
    for threshold in tqdm([0.0, *sorted(t for t in thresholds if t > 0)], desc="threshold sweep", disable=None, leave=False):
        model = copy.deepcopy(detector)
        sparsity = zero_below(model, layers, resolve_threshold(model, layers, threshold, scope, fold_bn), fold_bn)
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
