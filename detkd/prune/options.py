"""The ``prune`` section of a config, checked and with defaults (see ``configs/_base_/prune.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["METHODS", "PruneOptions"]

METHODS = ("singh", "l1", "taylor")


def _section(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {where} settings {unknown} (known: {sorted(known)})")
    return cls(**data)


@dataclass
class SparsityOptions:
    """Stage 1 (Singh): train ``epochs`` with ``loss + weight * sum |w|`` at learning rate ``lr``
    (``None``: the config's); ``fold_bn``: magnitudes of BN-folded weights (penalty, threshold and its
    quantiles; see :mod:`detkd.prune.sparsity`)."""

    epochs: int = 10
    weight: float = 1e-4
    lr: float | None = None
    fold_bn: bool = True


@dataclass
class SweepOptions:
    """Thresholds to try: absolute ``thresholds``, or else ``quantiles`` of the layer set's |w|
    (scale-free); the largest whose val mAP50 is at most ``max_drop`` below threshold 0 wins."""

    thresholds: list[float] = field(default_factory=list)
    quantiles: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
    max_drop: float = 0.01


@dataclass
class SelectOptions:
    """Singh filter selection (:func:`detkd.prune.importance.singh_selection`)."""

    out_fraction: float = 0.9
    in_fraction: float = 0.9
    combine: str = "or"


@dataclass
class PruneOptions:
    """Everything :mod:`detkd.prune.pipeline` reads from ``cfg.prune``.

    ``method``: ``singh`` (sparsity -> sweep -> plan -> apply -> retrain), ``l1`` or ``taylor``
    (plan -> apply -> retrain; ``ratio`` of the filters of every conv in ``layers``, ranked per
    layer or globally by ``scope``, ``iterations`` steps with ``finetune_epochs`` between them).
    ``min_keep``: filters every conv keeps at least. ``taylor_batches``: training batches the
    Taylor statistics average over. ``retrain_epochs``/``retrain_lr``: the final retraining with the
    original loss. ``eval_split``: where the sweep and the report measure mAP. ``threads``: for
    the latency measurements of the report.
    """

    method: str = "singh"
    layers: str | list[str] = "all"
    ratio: float = 0.5
    scope: str = "layer"
    min_keep: int = 8
    iterations: int = 1
    finetune_epochs: int = 1
    taylor_batches: int = 8
    retrain_epochs: int = 10
    retrain_lr: float | None = None
    eval_split: str = "val"
    threads: int = 2
    sparsity: SparsityOptions = field(default_factory=SparsityOptions)
    sweep: SweepOptions = field(default_factory=SweepOptions)
    select: SelectOptions = field(default_factory=SelectOptions)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> PruneOptions:
        cfg = dict(cfg or {})
        nested = {"sparsity": SparsityOptions, "sweep": SweepOptions, "select": SelectOptions}
        parts = {k: _section(t, cfg.pop(k, None), f"prune.{k}") for k, t in nested.items()}
        out = _section(cls, cfg, "prune")
        for k, v in parts.items():
            setattr(out, k, v)
        out.validate()
        return out

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"prune.method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"prune.ratio must be in [0, 1), got {self.ratio}")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"prune.scope must be 'layer' or 'global', not {self.scope!r}")
        if self.iterations < 1 or self.min_keep < 1:
            raise ValueError("prune.iterations and prune.min_keep must be >= 1")
        if self.select.combine not in ("or", "and"):
            raise ValueError(f"prune.select.combine must be 'or' or 'and', not {self.select.combine!r}")
        if any(not 0.0 < q < 1.0 for q in self.sweep.quantiles):
            raise ValueError(f"prune.sweep.quantiles must be in (0, 1), got {self.sweep.quantiles}")

    @property
    def stages(self) -> tuple[str, ...]:
        """The pipeline's stages for this method, in order."""
        first = ("sparsity", "sweep") if self.method == "singh" else ()
        return (*first, "plan", "apply", "retrain", "report")
