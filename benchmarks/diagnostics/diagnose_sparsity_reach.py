#!/usr/bin/env python
"""Can a sparsity stage under AdamW empty a filter at all? BatchNorm scales against the stage's step budget.

    python benchmarks/diagnostics/diagnose_sparsity_reach.py CKPT [CKPT ...] [--config configs/prune/ssd_cpu_bccd.py]
        [--data ../shared/data/bccd] [--names NAME ...]

Behind a BatchNorm a filter is switched off by its scale ``gamma`` (the conv's own weights are renormalised
in training mode, so shrinking them does not shrink the filter's output). Adam divides each parameter's step
by its gradient's running RMS: one step moves a parameter by about ``lr`` at most, whatever the penalty's
weight (at most ``lr * (1 - beta1) / sqrt(1 - beta2)`` = 3.16 ``lr`` with PyTorch's default betas, for a
gradient that jumps from zero). So over Singh's sparsity stage (``prune.sparsity``: ``epochs`` at ``lr``,
``ceil(train images / batch size)`` steps per epoch) a scale travels at most ``steps * lr`` (the typical
bound) or 3.16 times that (the strict one). For each checkpoint this prints the layer set's ``|gamma|``
quantiles and the fraction of filters whose ``|gamma|`` lies within each bound: the most that any penalty
in the loss (``l1``, ``group`` or ``bn_scale``) could empty in that stage. A proximal step
(``prune.sparsity.proximal``) is outside that bound.

Model statistics only (no training, no timing). Rows keyed by checkpoint label and resumable.
Outputs: benchmarks/results/diagnose_sparsity_reach.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config, run_options
from detkd.data.sources import read_split
from detkd.engine.benchmark import machine_info
from detkd.engine.checkpoint import checkpoint_model_label, load_detector
from detkd.engine.results import markdown_table, write_markdown
from detkd.fileio import atomic_write_json
from detkd.prune.groups import resolve_layer_set
from detkd.prune.sparsity import following_bn

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
ADAM_STRICT = 0.1 / math.sqrt(0.001)  # (1 - beta1) / sqrt(1 - beta2), PyTorch's default betas (0.9, 0.999)
QUANTILES = (0.0, 0.01, 0.1, 0.5, 0.9, 1.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="trained SSD checkpoints (pruning subjects)")
    parser.add_argument("--config", default=str(REPO / "configs" / "prune" / "ssd_cpu_bccd.py"), help="the prune config")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bccd"), help="dataset root")
    parser.add_argument("--names", nargs="+", help="a label per checkpoint (default: its model label and file hash)")
    return parser.parse_args()


def step_budget(config: str, data_root: str) -> dict[str, float]:
    """The sparsity stage's optimizer steps, peak learning rate and their product (the typical bound)."""
    cfg = load_config(config, {"data.root": data_root})
    opts = run_options(cfg)
    images = len(read_split(dict(cfg.data), "train").records)
    steps = opts.prune.sparsity.epochs * math.ceil(images / opts.train.batch_size)
    lr = opts.prune.sparsity.lr if opts.prune.sparsity.lr is not None else float(cfg.optim_wrapper.optimizer.lr)
    return {"sparsity_epochs": opts.prune.sparsity.epochs, "steps": steps, "peak_lr": lr, "reach": steps * lr,
            "reach_strict": steps * lr * ADAM_STRICT, "layers": opts.prune.layers}


def gamma_row(path: Path, budget: dict[str, float]) -> dict[str, float | str | int]:
    """``|gamma|`` of the BatchNorms behind the layer set's convs, and the fractions within reach."""
    detector = load_detector(path)
    gammas = [bn.weight.detach().abs() for name in resolve_layer_set(detector, str(budget["layers"]))
              if (bn := following_bn(detector, name)) is not None and bn.weight is not None]
    if not gammas:
        raise SystemExit(f"{path}: no BatchNorm follows a conv of the layer set {budget['layers']!r}")
    gamma = torch.cat(gammas).float()
    row: dict[str, float | str | int] = {"filters_with_bn": gamma.numel()}
    row.update({f"gamma_q{q:g}": round(float(torch.quantile(gamma, q)), 4) for q in QUANTILES})
    row["within_reach"] = round(float((gamma <= budget["reach"]).float().mean()), 4)
    row["within_strict_reach"] = round(float((gamma <= budget["reach_strict"]).float().mean()), 4)
    return row


def main() -> int:
    args = parse_args()
    if args.names and len(args.names) != len(args.checkpoints):
        raise SystemExit("--names needs one name per checkpoint")
    torch.set_num_threads(1)
    out = RESULTS / "diagnose_sparsity_reach.json"
    data = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    budget = step_budget(args.config, args.data)
    rows = {row["checkpoint"]: row for row in data["rows"]}
    for i, path in enumerate(args.checkpoints):
        label = args.names[i] if args.names else checkpoint_model_label(path, file_hash=True)
        rows[label] = {"checkpoint": label, **{k: v for k, v in budget.items() if k != "layers"}, **gamma_row(path, budget)}
    command = "python benchmarks/diagnostics/diagnose_sparsity_reach.py " + " ".join(sys.argv[1:])
    atomic_write_json(out, {"machine": machine_info(1), "command": command, "config": str(Path(args.config)),
                            "layers": budget["layers"], "rows": list(rows.values())})
    columns = ["checkpoint", "sparsity_epochs", "steps", "peak_lr", "reach", "reach_strict", "filters_with_bn",
               *[f"gamma_q{q:g}" for q in QUANTILES], "within_reach", "within_strict_reach"]
    text = (f"**Sparsity stage reach under AdamW** (`{Path(args.config).name}`, layer set `{budget['layers']}`): "
            "`reach` = steps x peak lr, the most a BatchNorm scale can travel in the stage (about lr per Adam step; "
            f"`reach_strict` = {ADAM_STRICT:.2f}x that, Adam's largest step); `gamma_q*`: quantiles of the layer set's "
            "|gamma|; `within_reach`: fraction of filters whose |gamma| a penalty in the loss could bring to zero.\n\n"
            + markdown_table(list(rows.values()), columns))
    write_markdown(RESULTS / "diagnose_sparsity_reach.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
