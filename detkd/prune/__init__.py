"""Pruning: layer sets and the dependency graph, filter importance, sparsity training, plans,
channel rounding and latency tables, retraining with distillation, and the pipeline behind
``tools/prune.py`` (:mod:`detkd.prune.pipeline`).

Names are imported on first use (``from detkd.prune import PrunePipeline``), so importing one part
does not pay for torch-pruning and the rest.
"""

from __future__ import annotations

from detkd._lazy import lazy_exports

_EXPORTS = {
    "Consumer": "groups",
    "PruningGraph": "groups",
    "followers": "groups",
    "layer_sets": "groups",
    "resolve_layer_set": "groups",
    "Importance": "importance",
    "L1Importance": "importance",
    "SinghImportance": "importance",
    "TaylorImportance": "importance",
    "singh_selection": "importance",
    "zero_fractions": "importance",
    "LatencyTable": "latency",
    "filter_flops": "latency",
    "latency_slopes": "latency",
    "measure_latency_table": "latency",
    "plan_by_latency": "latency",
    "round_removal": "latency",
    "PipelineError": "pipeline",
    "PrunePipeline": "pipeline",
    "load_source": "pipeline",
    "LayerPlan": "pruner",
    "PlanError": "pruner",
    "PruningPlan": "pruner",
    "apply_plan": "pruner",
    "count_cost": "pruner",
    "make_plan": "pruner",
    "plan_by_ratio": "pruner",
    "add_to_results": "report",
    "write_report": "report",
    "SSDDistillModel": "retrain",
    "EMPTY_TOLERANCE": "sparsity",
    "SPARSITY_KINDS": "sparsity",
    "SparsityModel": "sparsity",
    "choose_threshold": "sparsity",
    "cost_weights": "sparsity",
    "effective_weights": "sparsity",
    "empty_filter_fraction": "sparsity",
    "filter_norms": "sparsity",
    "following_bn": "sparsity",
    "l1_matched_weight": "sparsity",
    "proximal_step": "sparsity",
    "sparsity_penalty": "sparsity",
    "threshold_sweep": "sparsity",
    "weight_sparsity": "sparsity",
    "zero_below": "sparsity",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
