"""Evaluate detections against COCO ground truth: COCO mAP (pycocotools) and Pascal VOC AP.

Usage::

    python tools/eval.py --gt ANN.json --dets DETS.json [--out METRICS.json]

``ANN.json`` is a COCO instances file (optionally with a per-annotation ``"difficult"`` flag, as
detkd's converters write it); ``DETS.json`` a COCO results list. Prints a markdown table and, with
``--out``, writes every number (see :func:`detkd.engine.metrics.evaluate_detections`) as JSON.
Bad input ends with a one-line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import detkd  # noqa: F401  # first: sets the offline environment before other third-party imports

import argparse
import sys
from pathlib import Path

from detkd.engine.metrics import evaluate_detections, format_metrics_table
from detkd.fileio import atomic_write_json

__all__ = ["build_parser", "main", "parse_args"]

EXIT_BAD_INPUT = 2  # the same status argparse uses for a bad command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/eval.py",
        description=(
            "Evaluate a COCO results file (--dets) against COCO ground truth (--gt): COCO AP/AR "
            "via pycocotools plus VOC2007 11-point and VOC2010+ area AP at IoU 0.5."
        ),
        epilog="Example: python tools/eval.py --gt val.json --dets dets.json --out metrics.json",
    )
    # A later mode, `tools/eval.py CFG CKPT`, will evaluate a model; it will add two optional
    # positionals (nargs="?") here, which is why --gt/--dets are checked in main() and not
    # marked required=True.
    files = parser.add_argument_group("evaluate a detections file")
    files.add_argument("--gt", type=Path, metavar="ANN.json", help="COCO ground-truth annotation file")
    files.add_argument(
        "--dets", type=Path, metavar="DETS.json",
        help='COCO results file: a list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}',
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, metavar="METRICS.json", help="also write all metrics to this JSON file (atomically)"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gt is None or args.dets is None:
        parser.error("--gt and --dets are both required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        metrics = evaluate_detections(args.gt, args.dets)
        print(format_metrics_table(metrics))
        if args.out is not None:
            atomic_write_json(args.out, metrics)
    except (OSError, ValueError) as exc:
        # Bad input is the user's to fix: one readable line, no traceback.
        message = str(exc) if not isinstance(exc, OSError) or not exc.filename else f"{exc.filename}: {exc.strerror}"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.out is not None:
        print(f"\nmetrics written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
