"""Prune a trained SSD for real: fewer channels, a smaller ONNX file, measured speedup.

Examples:
    python tools/prune.py configs/prune/ssd_cpu_bccd.py --checkpoint work_dirs/ssd_cpu_bccd/best_coco_AP50_epoch_30.pth
    python tools/prune.py configs/prune/ssd_cpu_bccd.py --checkpoint CKPT --method l1 --ratio 0.6 --work-dir work_dirs/l1_60
    python tools/prune.py configs/prune/ssd_cpu_bccd.py --checkpoint CKPT --stage plan     # then edit W/plan.json
    python tools/prune.py configs/prune/ssd_cpu_bccd.py --checkpoint CKPT --stage apply retrain report
    python tools/prune.py configs/prune/ssd_cpu_bccd.py --checkpoint CKPT --resume         # after an interruption
    torchrun --nproc_per_node 2 tools/prune.py CFG --checkpoint CKPT --launcher pytorch   # DDP training stages

Methods: singh (Singh et al. 2019: sparsity -> sweep -> plan -> apply -> retrain -> report), l1 and
taylor (plan -> apply -> retrain -> report; `prune.iterations` > 1 prunes iteratively). Without
--stage every stage runs and finished ones (their artefact exists) are skipped; a stage named with
--stage always runs. The work dir holds each stage's artefacts: sparse.pth, sweep.json/.md,
plan.json (inspect or edit it before `apply`), pruned.pth, retrained.pth and report.json/.md/.png
(original vs pruned vs retrained: params, FLOPs, ONNX size, ONNX Runtime latency, mAP50, AP).
Pruned checkpoints load anywhere a detkd checkpoint does (tools/eval.py, tools/export.py,
tools/benchmark.py) with no config change: the pruned shapes travel with the weights.
Default work dir: work_dirs/<config name>_<method>.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.config import add_run_arguments, load_config
from detkd.engine.console import set_verbose
from detkd.commands import command_line
from detkd.errors import run_tool
from detkd.options import METHODS, PruneOptions

STAGES = PruneOptions(method="singh").stages  # every stage; l1 / taylor skip the first two


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="pruning config (configs/prune/*.py)")
    parser.add_argument("--checkpoint", required=True, help="the trained SSD: a detkd checkpoint or a torchvision SSD state dict")
    parser.add_argument("--method", choices=METHODS, help="overrides prune.method")
    parser.add_argument("--ratio", type=float, help="l1/taylor: fraction of filters removed per conv (overrides prune.ratio)")
    parser.add_argument("--stage", nargs="+", choices=STAGES, help="run only these stages (default: all, skipping finished ones)")
    parser.add_argument("--trust", action="store_true", help="allow unpickling --checkpoint (only for a file you trust)")
    parser.add_argument("--add-to", type=Path, metavar="RESULTS.json",
                        help="also add the report's rows to this results file (e.g. tools/benchmark.py's) and redraw its plot")
    add_run_arguments(parser, "prune.ratio=0.7 prune.retrain_epochs=20", "continue an interrupted training stage from its latest checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_verbose(args.verbose)
    return run_tool(lambda: prune(args), args.debug)


def prune(args: argparse.Namespace) -> int:
    options = dict(args.cfg_options)
    if args.method:
        options["prune.method"] = args.method
    if args.ratio is not None:
        options["prune.ratio"] = args.ratio
    cfg = load_config(args.config, options, args.data)
    from detkd.prune.pipeline import PrunePipeline  # heavy imports after the argument check

    work_dir = args.work_dir or str(Path("work_dirs") / f"{Path(args.config).stem}_{cfg.prune.method}")
    pipeline = PrunePipeline(cfg, args.checkpoint, work_dir, trust=args.trust, launcher=args.launcher,
                             resume=args.resume, command=command_line())
    report = pipeline.run(args.stage)
    if args.add_to and report:
        from detkd.prune.report import add_to_results

        print(f"added to {args.add_to}; plot: {add_to_results(report, args.add_to, Path(work_dir).name)}")
    print(f"artefacts in {work_dir}")
    return 0
