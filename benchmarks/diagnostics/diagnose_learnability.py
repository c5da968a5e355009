#!/usr/bin/env python
"""Is a dataset's class signal learnable? Train a small CNN on its ground-truth crops.

    python benchmarks/diagnostics/diagnose_learnability.py DATA_ROOT [--epochs 15] [--size 32] [--name NAME]

With ``--name`` the result is also a row of ``benchmarks/results/learnability.json`` (and its
``.md`` table), replacing an earlier row of that name.

Crops every non-difficult box (at least 6 px a side) of the VOC train and val splits, resizes them
to ``--size``, trains a 3-conv classifier (AdamW with a cosine decay to zero, flips) and prints val
accuracy every 5 epochs.
Chance level is 1/K. A detector cannot classify better than this probe suggests in the same budget;
use it before blaming a detector for a flat class loss. Single-threaded and seeded: repeatable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

import detkd  # noqa: F401
from detkd.data.images import load_image
from detkd.data.voc import read_voc
from detkd.fileio import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parents[1] / "results" / "learnability.json"


def crops(root: str, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    index = read_voc(root, split)
    images, labels = [], []
    for record in index.records:
        image = load_image(record.path)
        for box, label, difficult in zip(record.boxes.astype(int), record.labels, record.difficult, strict=True):
            if difficult or box[2] - box[0] < 6 or box[3] - box[1] < 6:
                continue
            images.append(cv2.resize(image[box[1]:box[3], box[0]:box[2]], (size, size)))
            labels.append(label)
    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    return x, torch.tensor(labels), len(index.class_names)


def classifier(num_classes: int) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


def save_row(row: dict, path: Path = RESULTS) -> None:
    """Add ``row`` to the results file (replacing the row of the same name) and rewrite its table."""
    from detkd.engine.benchmark import machine_info
    from detkd.engine.results import markdown_table

    data = json.loads(path.read_text()) if path.is_file() else {"machine": machine_info(1), "rows": []}
    data["command"] = "python benchmarks/diagnostics/diagnose_learnability.py DATA_ROOT --name NAME"
    data["rows"] = [r for r in data["rows"] if r["name"] != row["name"]] + [row]
    atomic_write_json(path, data)
    columns = ["dataset", "classes (chance)", "train / val crops", "val accuracy after 5 / 10 / 15 epochs"]
    table = [dict(zip(columns, (r["name"], f"{r['classes']} ({1 / r['classes']:.3f})", f"{r['train_crops']} / {r['val_crops']}",
                                " / ".join(f"{a:.3f}" for a in r["val_accuracy"])), strict=True)) for r in data["rows"]]
    atomic_write_text(path.with_suffix(".md"), markdown_table(table, columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--name", help="also record the result under this name in benchmarks/results/learnability.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, y_train, k = crops(args.data_root, "train", args.size)
    x_val, y_val, _ = crops(args.data_root, "val", args.size)
    print(f"{len(y_train)} train / {len(y_val)} val crops, {k} classes (chance {1 / k:.3f})")
    accuracies: list[float] = []
    net, generator = classifier(k), torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), 2e-3)
    steps = args.epochs * ((len(y_train) + 63) // 64)
    # cosine decay to zero: the last epoch's accuracy is where training settled, not a point on a
    # noisy trajectory (at a constant rate it swung by +-0.15 between epochs)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(order), 64):
            batch = x_train[order[i:i + 64]]
            batch = batch.flip(3) if torch.rand(1, generator=generator) < 0.5 else batch
            loss = nn.functional.cross_entropy(net(batch), y_train[order[i:i + 64]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
        if epoch % 5 == 0:
            net.eval()
            with torch.no_grad():
                accuracy = (net(x_val).argmax(1) == y_val).float().mean().item()
            print(f"epoch {epoch}: last batch loss {loss.item():.3f}, val accuracy {accuracy:.3f}")
            accuracies.append(round(accuracy, 4))
    if args.name:
        save_row({"name": args.name, "data_root": Path(args.data_root).name, "classes": k, "train_crops": len(y_train),
                  "val_crops": len(y_val), "epochs": args.epochs, "crop_size": args.size, "val_accuracy": accuracies})
    return 0


if __name__ == "__main__":
    sys.exit(main())
