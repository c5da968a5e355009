"""Evaluate: a trained model on a dataset split, or a detections file against COCO ground truth.

Usage::

    python tools/eval.py CFG CKPT [--split val] [--out METRICS.json] [--dets DETS.json]
    python tools/eval.py --gt ANN.json --dets DETS.json [--out METRICS.json]

Model mode reads the split from the config's ``data`` (override with ``--cfg-options``), rebuilds
the model from the checkpoint alone (detkd checkpoints carry their model spec; loaded with
``weights_only=True``) and writes the detections (COCO results, original image pixels) to
``--dets``. File mode evaluates an existing COCO results file against a COCO instances file (a
per-annotation ``"difficult"`` flag, as detkd's converters write it, is honoured by VOC AP).
Metrics: COCO AP/AR via pycocotools, VOC2007 11-point and VOC2010+ area AP50, per class.
Bad input ends with a one-line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import detkd  # noqa: F401  # first: sets the offline environment before other third-party imports

import argparse
from pathlib import Path

from detkd.config import DictAction, add_data_argument
from detkd.engine.metrics import evaluate_detections, format_metrics_table
from detkd.errors import add_debug_argument, run_tool
from detkd.fileio import atomic_write_json

__all__ = ["build_parser", "main", "parse_args"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("evaluate a model")
    model.add_argument("config", nargs="?", type=Path, help="training config (for data and decode settings)")
    model.add_argument("checkpoint", nargs="?", type=Path, help="detkd checkpoint (.pth)")
    model.add_argument("--split", default="val", help="config data split to evaluate (default: %(default)s)")
    model.add_argument("--batch-size", type=int, default=8)
    model.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE")
    add_data_argument(model)
    model.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in the checkpoint (trusted files only)")
    files = parser.add_argument_group("evaluate a detections file")
    files.add_argument("--gt", type=Path, metavar="ANN.json", help="COCO ground-truth annotation file")
    files.add_argument("--dets", type=Path, metavar="DETS.json",
                       help="file mode: COCO results to evaluate; model mode: where to write the model's detections")
    parser.add_argument("--out", type=Path, metavar="METRICS.json", help="also write all metrics to this JSON file (atomically)")
    add_debug_argument(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        if args.checkpoint is None or args.gt is not None:
            parser.error("model mode takes CFG CKPT (and no --gt)")
    elif args.gt is None or args.dets is None:
        parser.error("give CFG CKPT, or both --gt and --dets")
    return args


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    from detkd.config import load_config, run_options
    from detkd.data.sources import read_split
    from detkd.engine.checkpoint import load_detector
    from detkd.engine.evaluate import evaluate_model

    cfg = load_config(args.config, args.cfg_options, args.data)
    detector = load_detector(args.checkpoint, trust=args.trust)
    index = read_split(dict(cfg.data), args.split)
    metrics, dets = evaluate_model(detector, index, batch_size=args.batch_size, decode_cfg=run_options(cfg).decode)
    if args.dets is not None:
        atomic_write_json(args.dets, dets, indent=None)
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        metrics = evaluate_checkpoint(args) if args.config is not None else evaluate_detections(args.gt, args.dets)
        print(format_metrics_table(metrics))
        if args.out is not None:
            atomic_write_json(args.out, metrics)
            print(f"\nmetrics written to {args.out}")
        return 0

    return run_tool(body, args.debug)
