"""Filter importance: one small protocol, three criteria.

``Importance.__call__(graph, name) -> Float[C]`` scores the ``C`` output filters of conv ``name``;
higher means keep. Criteria:

- :class:`L1Importance` — L1 norm of each filter's weights (Li et al. 2017).
- :class:`TaylorImportance` — Molchanov et al. 2017: for feature map ``k`` with activation ``z`` and
  loss ``C``, ``|mean over the M positions of dC/dz_k * z_k|`` per image, averaged over the images
  of a few batches, then divided by the layer's L2 norm (so scores compare across layers). The
  activation is the output of the conv's block (after BatchNorm and ReLU when the conv has them),
  which is what the next layer sees.
- :class:`SinghImportance` — Singh et al. 2019: the fraction of zero weights of each filter of layer
  ``l`` and of its matching input slices in every consumer conv (layer ``l+1``, head convs), after
  sparsity training and a threshold. :func:`singh_selection` marks the filters to remove.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
import torch.nn as nn

from detkd.prune.groups import PruningGraph, followers

__all__ = ["Importance", "L1Importance", "SinghImportance", "TaylorImportance", "singh_selection", "zero_fractions"]


class Importance(Protocol):
    def __call__(self, graph: PruningGraph, name: str) -> torch.Tensor:
        """``Float[C_out]`` scores of conv ``name``'s filters (higher = keep)."""
        ...


class L1Importance:
    """``||W_k||_1`` of each output filter ``k``."""

    def __call__(self, graph: PruningGraph, name: str) -> torch.Tensor:
        return graph.conv(name).weight.detach().abs().flatten(1).sum(1).float().cpu()


def _activation_module(detector: nn.Module, conv_name: str) -> nn.Module:
    """The module whose output is conv ``conv_name``'s activation: the last of the BatchNorm /
    activation layers that directly follow the conv in its ``Sequential`` (``Conv2dNormActivation``,
    torchvision's VGG), else the conv itself."""
    module = detector.get_submodule(conv_name)
    for follower in followers(detector, conv_name):
        if not isinstance(follower, (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.LeakyReLU)):
            break
        module = follower
    return module


class TaylorImportance:
    """Molchanov's first-order Taylor criterion, collected by :meth:`collect` on a few batches.

    Args:
        normalize: divide each layer's scores by their L2 norm (the paper's layer-wise normalisation).
    """

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize
        self.scores: dict[str, torch.Tensor] = {}
        self.images = 0

    def collect(
        self, detector: nn.Module, names: Iterable[str], batches: Iterable[Any],
        loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    ) -> TaylorImportance:
        """Accumulate ``sum over images of |mean_m dC/dz * z|`` for convs ``names``.

        ``loss_fn(detector, batch)`` returns the scalar training loss of one batch. BatchNorm runs in
        eval mode (its statistics must not drift while we only measure); gradients are computed but
        no weight changes, and ``detector``'s gradients are cleared afterwards.
        """
        names = list(names)
        acts: dict[str, torch.Tensor] = {}
        handles = []

        def keep(name: str) -> Callable[..., None]:
            def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
                output.retain_grad()
                acts[name] = output
            return hook

        for name in names:
            handles.append(_activation_module(detector, name).register_forward_hook(keep(name)))
        training = detector.training
        detector.eval()
        try:
            for batch in batches:
                acts.clear()
                detector.zero_grad(set_to_none=True)
                loss_fn(detector, batch).backward()
                for name in names:
                    z = acts[name]
                    if z.grad is None:
                        raise RuntimeError(f"{name}: its activation got no gradient (not on the loss path?)")
                    per_image = (z.grad * z).mean(dim=(2, 3)).abs().detach()  # [B, C]
                    self.scores[name] = self.scores.get(name, 0) + per_image.sum(0).float().cpu()
                self.images += int(next(iter(acts.values())).shape[0])
        finally:
            for handle in handles:
                handle.remove()
            detector.zero_grad(set_to_none=True)
            detector.train(training)
        return self

    def __call__(self, graph: PruningGraph, name: str) -> torch.Tensor:
        if name not in self.scores:
            raise KeyError(f"no Taylor statistics for {name}; call collect() with it first")
        score = self.scores[name] / max(1, self.images)
        if score.shape[0] != graph.conv(name).out_channels:
            raise ValueError(f"{name}: statistics for {score.shape[0]} channels, the conv has {graph.conv(name).out_channels}")
        return score / score.norm().clamp_min(1e-12) if self.normalize else score


def zero_fractions(graph: PruningGraph, name: str, eps: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out_frac, in_frac)``, both ``Float[C]`` for conv ``name``'s ``C`` filters.

    ``out_frac[k]``: fraction of filter ``k``'s weights with ``|w| <= eps``. ``in_frac[k]``: the same
    over the input slices ``W[:, k]`` of every consumer conv (concatenated), i.e. how little the
    next layers read channel ``k``. A conv without consumer convs gets ``in_frac = 0``.
    """
    weight = graph.conv(name).weight.detach()
    out_frac = (weight.abs() <= eps).flatten(1).float().mean(1).cpu()
    slices = []
    for consumer in graph.consumer_convs(name):
        conv = graph.conv(consumer)
        if conv.groups != 1:
            continue
        w = conv.weight.detach().transpose(0, 1).flatten(1)  # [C, out * kh * kw]
        slices.append(w)
    if not slices:
        return out_frac, torch.zeros_like(out_frac)
    read = torch.cat(slices, dim=1)
    return out_frac, (read.abs() <= eps).float().mean(1).cpu()


class SinghImportance:
    """``1 - max(out_frac, in_frac)``: a filter whose weights, or whose uses by the next layers, are
    mostly zero scores low (see :func:`zero_fractions`)."""

    def __init__(self, eps: float = 0.0) -> None:
        self.eps = eps

    def __call__(self, graph: PruningGraph, name: str) -> torch.Tensor:
        out_frac, in_frac = zero_fractions(graph, name, self.eps)
        return 1.0 - torch.maximum(out_frac, in_frac)


def singh_selection(
    graph: PruningGraph, names: Iterable[str], out_fraction: float = 0.9, in_fraction: float = 0.9,
    combine: str = "or", min_keep: int = 1, eps: float = 0.0,
) -> dict[str, list[int]]:
    """Filters to remove per conv: ``out_frac >= out_fraction`` and/or ``in_frac >= in_fraction``.

    Args:
        combine: ``"or"`` (either test marks a filter, the paper's two criteria) or ``"and"``.
        min_keep: never remove so many that fewer than this many filters remain (the filters with the
            highest :class:`SinghImportance` are spared first).
    """
    if combine not in ("or", "and"):
        raise ValueError(f"combine must be 'or' or 'and', not {combine!r}")
    removed: dict[str, list[int]] = {}
    for name in names:
        out_frac, in_frac = zero_fractions(graph, name, eps)
        a, b = out_frac >= out_fraction, in_frac >= in_fraction
        marked = (a | b) if combine == "or" else (a & b)
        idx = marked.nonzero().flatten()
        spare = len(out_frac) - max(1, min_keep)
        if len(idx) > spare:  # keep the least-zero of the marked ones
            score = (1.0 - torch.maximum(out_frac, in_frac))[idx]
            idx = idx[score.argsort(stable=True)[:max(0, spare)]]
        removed[name] = sorted(int(i) for i in idx)
    return removed
