#!/usr/bin/env python
"""Where does a student lose against its teacher? Per-class and per-size accuracy of trained checkpoints.

    python benchmarks/diagnostics/diagnose_per_class.py CKPT [CKPT ...] [--names NAME ...]
        [--config configs/train/fyolo_bccd.py] [--data ../shared/data/bccd] [--split val]

Each checkpoint (any detkd detector: the teacher SSD, F-YOLO students at any input size) is evaluated on
the split at its own input size: mAP50 and AP overall, COCO's AP by object area (``APs`` < 32², ``APm``,
``APl`` > 96² pixels of the *original* image), and mAP50 / AP per class. A second table gives the
split's ground-truth boxes per class: how many, and their size (the square root of the area, median and
10th percentile) in pixels of each checkpoint's letterboxed input and in cells of a stride-32 grid, so
a class that a student loses can be read against how large it is on the student's input.
Accuracy only (no timing): it may share the CPU with a training run.

Rows are keyed by checkpoint file (its model label and hash) and split, and resumable; the report shows them all.
Outputs: benchmarks/results/diagnose_per_class.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.records import DatasetIndex
from detkd.data.sources import read_split
from detkd.engine.benchmark import count_flops, count_params, machine_info
from detkd.engine.checkpoint import checkpoint_model_label, load_detector
from detkd.engine.evaluate import evaluate_model
from detkd.engine.results import ResultsFile, markdown_table, relative_path, write_markdown

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
STRIDE = 32  # the F-YOLO student's output stride (one grid cell)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="detkd detector checkpoints")
    parser.add_argument("--names", nargs="+", help="a short name per checkpoint for the tables (default: its model label)")
    parser.add_argument("--config", default=str(REPO / "configs" / "train" / "fyolo_bccd.py"), help="the checkpoints' data config")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bccd"), help="dataset root")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    if args.names and len(args.names) != len(args.checkpoints):
        parser.error(f"--names gives {len(args.names)} names for {len(args.checkpoints)} checkpoints")
    return args


def box_sizes(index: DatasetIndex, imgsz: int) -> dict[str, dict[str, float]]:
    """Per class of ``index``: ``count`` of its (non-difficult) boxes and their size ``sqrt(w * h)`` once
    the image is letterboxed to ``imgsz`` (scale ``imgsz / max(width, height)``): ``median_px``, ``p10_px``
    and ``median_cells`` (the median in cells of a stride-:data:`STRIDE` grid)."""
    sizes: dict[int, list[float]] = {k: [] for k in range(len(index.class_names))}
    for record in index.records:
        scale = imgsz / max(record.width, record.height)
        boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
        keep = record.not_difficult
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) * scale
        for label, value in zip(np.asarray(record.labels).reshape(-1)[keep], side[keep], strict=True):
            sizes[int(label)].append(float(value))
    out = {}
    for k, name in enumerate(index.class_names):
        values = np.asarray(sizes[k]) if sizes[k] else np.zeros(1)
        out[name] = {"count": len(sizes[k]), "median_px": float(np.median(values)),
                     "p10_px": float(np.percentile(values, 10)), "median_cells": float(np.median(values)) / STRIDE}
    return out


def evaluate_row(ckpt: Path, label: str, name: str | None, index: DatasetIndex, split: str) -> dict[str, Any]:
    """One results row: ``ckpt``'s (:func:`checkpoint_model_label` ``label``) overall, by-area and per-class
    accuracy on ``index``."""
    detector = load_detector(ckpt).eval()
    metrics, _ = evaluate_model(detector, index, batch_size=8, progress=False)
    row: dict[str, Any] = {"name": name or label, "dataset": Path(index.source).name, "split": split, "checkpoint_label": label,
                           "checkpoint": relative_path(ckpt, REPO), "imgsz": int(detector.imgsz), "params": count_params(detector),
                           "flops": count_flops(detector, int(detector.imgsz)), "onnx_latency_ms": None,  # accuracy only
                           "mAP50": metrics["AP50"], "AP": metrics["AP"]}
    row.update({key: metrics[key] for key in ("APs", "APm", "APl")})
    for cls, values in metrics["per_class"].items():
        row[f"AP50_{cls}"], row[f"AP_{cls}"] = values["AP50"], values["AP"]
    return row


def write_report(results: ResultsFile, index: DatasetIndex) -> None:
    rows = results.rows
    classes = list(index.class_names)
    columns = ["name", "imgsz", "params", "flops", "mAP50", "AP", "APs", "APm", "APl", *[f"AP50_{c}" for c in classes],
               *[f"AP_{c}" for c in classes]]
    size_rows = []
    for imgsz in sorted({int(r["imgsz"]) for r in rows}):
        for cls, stats in box_sizes(index, imgsz).items():
            size_rows.append({"input": f"{imgsz} px", "class": cls, **stats})
    text = (f"`{rows[0]['dataset'] if rows else ''}`, `{rows[0]['split'] if rows else ''}` split: accuracy of each checkpoint at its own input size "
            "(`APs`/`APm`/`APl`: COCO's AP by area in the original image, -1 = no box of that size; per class: mAP50 "
            "and AP).\n\n" + markdown_table(rows, columns)
            + "\n\nGround-truth boxes per class (size: sqrt(w h) on the letterboxed input; cells: of a stride-32 grid).\n\n"
            + markdown_table(size_rows, ["input", "class", "count", "median_px", "p10_px", "median_cells"]) + "\n")
    write_markdown(RESULTS / "diagnose_per_class.md", text)


def main() -> int:
    args = parse_args()
    command = "python benchmarks/diagnostics/diagnose_per_class.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "diagnose_per_class.json", machine_info(1), command)
    torch.set_num_threads(1)  # accuracy only: leave the other core to a training run
    data = dict(load_config(args.config, {"data.root": args.data}).data)
    index = read_split(data, args.split)
    for i, ckpt in enumerate(args.checkpoints):
        name = args.names[i] if args.names else None
        label = checkpoint_model_label(ckpt, file_hash=True)
        if results.has(checkpoint_label=label, split=args.split, name=name or label):
            continue
        row = evaluate_row(ckpt, label, name, index, args.split)
        results.add(row, key=("checkpoint_label", "split"))
        print(f"{row['name']}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f}", flush=True)
    write_report(results, index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
