#!/usr/bin/env python
"""How many ground-truth boxes a YOLOv2-family head cannot learn because another box takes their slot.

    python benchmarks/diagnostics/diagnose_grid_slots.py CKPT [--data ../shared/data/bccd] [--split val]

A YOLOv2 head has one responsible (cell, best-anchor) slot per box; when two boxes of an image map
to the same slot, only one becomes a positive. This counts such boxes at the checkpoint's input
size with its anchors — a ceiling check for crowded datasets, not a benchmark.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import detkd  # noqa: F401
from detkd.data.voc import read_voc
from detkd.engine.checkpoint import load_detector
from detkd.models.box_coder import assign_cells, best_anchors

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bccd"))
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    model = load_detector(args.checkpoint)
    import torch

    index = read_voc(args.data, args.split, list(model.class_names))
    grid = (model.imgsz // model.stride, model.imgsz // model.stride)
    total, lost, by_class = 0, 0, Counter()
    for record in index.records:
        boxes = torch.from_numpy(record.boxes) * (model.imgsz / max(record.width, record.height))
        cells = assign_cells(boxes, model.stride, grid)
        anchors = best_anchors(boxes, model.anchors)
        slots = Counter()
        order = torch.argsort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), descending=True)
        for i in order.tolist():  # the larger box keeps a shared slot, as the loss does
            key = (int(cells[i, 0]), int(cells[i, 1]), int(anchors[i]))
            slots[key] += 1
            if slots[key] > 1:
                lost += 1
                by_class[index.class_names[int(record.labels[i])]] += 1
        total += len(boxes)
    print(f"{args.split}: {total} boxes at {model.imgsz} px, grid {grid[0]}x{grid[1]}, {len(model.anchors)} anchors; "
          f"{lost} ({100 * lost / max(total, 1):.1f} %) share a (cell, anchor) slot with a larger box: {dict(by_class)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
