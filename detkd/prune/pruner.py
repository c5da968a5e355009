"""Pruning plans: choose filters, write an inspectable JSON plan, apply it for real.

A :class:`PruningPlan` lists, per conv, its channel count and the output filters to remove (indices
into that conv's filters *before* this plan), plus params and FLOPs before and after. A user may edit
``removed`` in the JSON file before applying it; :func:`apply_plan` checks the plan against the model
(names, channel counts, indices) and removes the channels through the dependency graph, so every
consumer shrinks with its producer. The result is an ordinary module: it trains, evaluates and
exports. :func:`reshape_like` (from :mod:`detkd.models.reshape`) rebuilds pruned shapes from a state
dict, which is how a pruned checkpoint loads without any change to the original config.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from detkd.errors import ConfigError
from detkd.fileio import atomic_write_text
from detkd.models.reshape import reshape_like  # re-exported: it moved down so engine.checkpoint can use it
from detkd.prune.groups import PruningGraph
from detkd.prune.importance import Importance

__all__ = ["LayerPlan", "PlanError", "PruningPlan", "apply_plan", "count_cost", "plan_by_ratio", "make_plan", "reshape_like"]


class PlanError(ConfigError):
    """A plan that does not fit the model it is applied to."""


@dataclass
class LayerPlan:
    """One conv: ``channels`` output filters before, ``removed`` indices (sorted, unique)."""

    name: str
    channels: int
    removed: list[int]

    @property
    def kept(self) -> list[int]:
        gone = set(self.removed)
        return [i for i in range(self.channels) if i not in gone]


@dataclass
class PruningPlan:
    """What to remove, and what it costs/saves (``params``/``flops`` at batch 1, ``imgsz`` input)."""

    method: str
    imgsz: int
    layers: list[LayerPlan]
    params_before: int = 0
    params_after: int = 0
    flops_before: int = 0
    flops_after: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for layer, plain in zip(self.layers, out["layers"], strict=True):
            plain["kept"] = layer.kept
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "plan") -> PruningPlan:
        try:
            layers = [LayerPlan(str(d["name"]), int(d["channels"]), sorted({int(i) for i in d["removed"]}))
                      for d in data["layers"]]
            fields = {k: data[k] for k in ("params_before", "params_after", "flops_before", "flops_after") if k in data}
            return cls(method=str(data["method"]), imgsz=int(data["imgsz"]), layers=layers,
                       options=dict(data.get("options", {})), **{k: int(v) for k, v in fields.items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{source}: not a pruning plan ({type(exc).__name__}: {exc})") from exc

    def save(self, path: str | Path) -> None:
        """Write the plan as JSON (atomically), index lists on one line each so it reads and edits easily."""
        text = json.dumps(self.to_dict(), indent=2)
        text = re.sub(r"\[\s*([-\d,\s]*?)\s*\]", lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text)
        atomic_write_text(path, text + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PruningPlan:
        path = Path(path)
        if not path.is_file():
            raise PlanError(f"{path}: plan file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise PlanError(f"{path}: invalid JSON ({exc})") from exc
        return cls.from_dict(data, str(path))

    def summary(self) -> str:
        removed = sum(len(layer.removed) for layer in self.layers)
        total = sum(layer.channels for layer in self.layers)
        ratio = self.params_before / max(1, self.params_after)
        return (f"{self.method}: remove {removed}/{total} filters in {len(self.layers)} convs; params "
                f"{self.params_before / 1e6:.2f}M -> {self.params_after / 1e6:.2f}M ({ratio:.1f}x fewer), "
                f"FLOPs {self.flops_before / 1e9:.2f}G -> {self.flops_after / 1e9:.2f}G")


def count_cost(detector: nn.Module, imgsz: int) -> tuple[int, int]:
    """``(params, FLOPs)`` at batch 1 (2 FLOPs per multiply-add, as the benchmarks count them)."""
    from detkd.engine.benchmark import count_flops, count_params

    training = detector.training
    try:
        return count_params(detector), count_flops(detector, imgsz)
    finally:
        detector.train(training)


def _clamp_removal(order: torch.Tensor, count: int, channels: int, min_keep: int) -> list[int]:
    count = max(0, min(count, channels - max(1, min_keep)))
    return sorted(int(i) for i in order[:count])


def plan_by_ratio(
    graph: PruningGraph, names: Iterable[str], importance: Importance, ratio: float,
    scope: str = "layer", min_keep: int = 8,
) -> dict[str, list[int]]:
    """Remove the lowest-scoring ``ratio`` of filters: in every conv (``scope="layer"``), or the
    lowest ``ratio`` of all filters of ``names`` ranked together (``"global"``; needs comparable
    scores, e.g. layer-normalised Taylor). Every conv keeps at least ``min_keep`` filters."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    names = list(names)
    scores = {name: importance(graph, name) for name in names}
    if scope == "layer":
        return {n: _clamp_removal(s.argsort(stable=True), round(ratio * len(s)), len(s), min_keep) for n, s in scores.items()}
    if scope != "global":
        raise ValueError(f"scope must be 'layer' or 'global', not {scope!r}")
    flat = torch.cat([scores[n] for n in names])
    owner = torch.cat([torch.full((len(scores[n]),), i) for i, n in enumerate(names)])
    sizes = torch.tensor([len(scores[n]) for n in names])
    offsets = sizes.cumsum(0) - sizes  # where each conv's filters start in ``flat``
    order = flat.argsort(stable=True)[: round(ratio * len(flat))]
    out = {}
    for i, name in enumerate(names):
        mine = order[owner[order] == i] - offsets[i]  # this conv's chosen filters, lowest score first
        out[name] = _clamp_removal(mine, len(mine), len(scores[name]), min_keep)
    return out


def make_plan(detector: nn.Module, removed: Mapping[str, list[int]], method: str, imgsz: int | None = None,
              **options: Any) -> PruningPlan:
    """A plan for ``removed`` with its costs (measured by applying it to a copy of ``detector``)."""
    size = int(imgsz or detector.imgsz)
    layers = [LayerPlan(name, detector.get_submodule(name).out_channels, sorted(set(idx))) for name, idx in removed.items()]
    plan = PruningPlan(method, size, layers, options=dict(options))
    plan.params_before, plan.flops_before = count_cost(detector, size)
    pruned = apply_plan(copy.deepcopy(detector), plan)
    plan.params_after, plan.flops_after = count_cost(pruned, size)
    return plan


def apply_plan(detector: nn.Module, plan: PruningPlan, graph: PruningGraph | None = None) -> nn.Module:
    """Remove ``plan``'s filters from ``detector`` in place (and return it).

    Raises:
        PlanError: an unknown conv, a channel count that differs from the model's (a plan made for
            another model or already applied), an index out of range, or every filter removed.
    """
    modules = dict(detector.named_modules())
    for layer in plan.layers:
        conv = modules.get(layer.name)
        if not isinstance(conv, nn.Conv2d):
            raise PlanError(f"plan names {layer.name!r}, which is {'not a Conv2d' if conv is not None else 'not in the model'}")
        if conv.out_channels != layer.channels:
            raise PlanError(f"{layer.name}: plan is for {layer.channels} filters, the model has {conv.out_channels} "
                            "(a plan for another model, or one already applied?)")
        bad = [i for i in layer.removed if not 0 <= i < layer.channels]
        if bad:
            raise PlanError(f"{layer.name}: filter indices {bad[:5]} outside 0..{layer.channels - 1}")
        if len(layer.removed) >= layer.channels:
            raise PlanError(f"{layer.name}: the plan removes all {layer.channels} filters")
    graph = graph or PruningGraph(detector, plan.imgsz)
    for layer in plan.layers:
        graph.prune(layer.name, layer.removed)
    _record(detector, plan)
    return detector


def _record(detector: nn.Module, plan: PruningPlan) -> None:
    """Remember on the model that it is pruned (checkpoints store it; see :func:`reshape_like`)."""
    history = list(getattr(detector, "detkd_pruned", {}).get("plans", []))
    history.append({"method": plan.method, "params_after": plan.params_after, "flops_after": plan.flops_after,
                    "channels": {layer.name: layer.channels - len(layer.removed) for layer in plan.layers}})
    detector.detkd_pruned = {"plans": history}  # type: ignore[assignment]
