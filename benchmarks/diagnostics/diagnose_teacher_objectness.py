#!/usr/bin/env python
"""What weight does objectness scaling give a teacher's real objects? Objectness of each teacher's candidates.

    python benchmarks/diagnostics/diagnose_teacher_objectness.py TEACHER [TEACHER ...] [--names NAME ...] [--trust-teacher]
        [--config configs/train/fyolo_bccd.py] [--data ../shared/data/bccd] [--split train] [--top-n 100]

The objectness-scaled loss (``distill.scale_by_objectness``, Mehta & Ozturk) multiplies the teacher's box and
class terms at each cell by the teacher's objectness there. That assumes an objectness near 1 on real objects.
A detkd SSD's objectness is its foreground probability (1 - p(background)); an ultralytics YOLOv8 has none, and
the generic adapter reads its best class score instead, which YOLOv8 trains towards the box's IoU. This script
reads each teacher's cached candidates (the teacher cache of ``teacher.cache=True``: the same top-N candidates,
in the image's pixels, that distillation trains on; built here if absent) over the split's images and matches
each ground-truth box (not ``difficult``) to the candidate of highest IoU:

- ``matched``: the fraction of ground-truth boxes with a candidate at IoU >= 0.5;
- ``obj_mean`` / ``obj_p10`` / ``obj_median`` / ``obj_p90``: the objectness of those matched candidates, i.e.
  the weight objectness scaling gives a real object's teacher terms; ``obj_ge_0.9``: the fraction of them >= 0.9;
- ``bg_obj_mean``: the mean objectness of candidates that overlap no ground truth (IoU < 0.1): the weight of
  the teacher's false positives;
- ``img_max_median``: the median over images of the highest candidate objectness;
- ``bg_conf_per_image``: confident background candidates (objectness >= 0.5, IoU < 0.1 with every box), after
  NMS at IoU 0.5 so that one unlabeled object counts once, per image: objects the teacher is sure of and the
  labels do not have (its false positives, or objects the annotators missed); ``bg_conf_top_class``: the class
  most of them are given, with its share; ``gt_per_image``: the labeled boxes per image, for scale.

Per class (``per_class``, a second table): for the ground-truth boxes of each class, ``matched``, ``cands_per_box``
(candidates at IoU >= 0.5 per box: how many of the top-N a teacher spends on one object of that class),
``obj_median`` of the best-matching candidate, and ``cls_prob``: the mean probability that candidate gives the box's
own class (the class target distillation passes on for that object).

Accuracy of the teacher is not measured here (no timing either: it may share the CPU with a training run).
Rows are keyed by the teacher file's hash and the split, and resumable.
Outputs: benchmarks/results/diagnose_teacher_objectness.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou, nms

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.records import DatasetIndex
from detkd.data.sources import read_split
from detkd.distill.cache import TeacherCache
from detkd.distill.runner import load_teacher
from detkd.engine.benchmark import count_params, machine_info
from detkd.engine.results import ResultsFile, markdown_table, relative_path, write_markdown
from detkd.fileio import file_sha256

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
MATCH_IOU = 0.5  # a ground-truth box is found by a candidate at this IoU
BACKGROUND_IOU = 0.1  # a candidate below this IoU with every ground-truth box is background
CONFIDENT = 0.5  # a background candidate at or above this objectness is one the teacher is sure of


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teachers", nargs="+", type=Path, help="teacher checkpoints (detkd .pth, ultralytics .pt)")
    parser.add_argument("--names", nargs="+", help="a short name per teacher for the table (default: its file name and hash)")
    parser.add_argument("--trust-teacher", action="store_true", help="the ultralytics .pt files are pickles you trust")
    parser.add_argument("--config", default=str(REPO / "configs" / "train" / "fyolo_bccd.py"), help="the data config")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bccd"), help="dataset root")
    parser.add_argument("--split", default="train", help="the images whose candidates are read (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=320, help="the teachers' input size (default: %(default)s)")
    parser.add_argument("--top-n", type=int, default=100, help="candidates per image, as teacher.cache_top_n (default: %(default)s)")
    args = parser.parse_args()
    if args.names and len(args.names) != len(args.teachers):
        parser.error(f"--names gives {len(args.names)} names for {len(args.teachers)} teachers")
    return args


def objectness_stats(cache: TeacherCache, index: DatasetIndex) -> dict[str, float | str]:
    """The statistics of the module docstring over ``index``'s images that ``cache`` holds."""
    matched: list[float] = []
    background: list[float] = []
    image_max: list[float] = []
    confident_classes: list[int] = []  # per distinct confident background candidate, its best class
    missed = 0
    counted = 0  # labeled boxes that count (not difficult)
    names = list(index.class_names)
    per_class: dict[str, dict[str, list[float]]] = {c: {"found": [], "cands": [], "obj": [], "cls": []} for c in names}
    for record in index.records:
        cands = cache.lookup(record.path)
        if cands is None or not len(cands["obj"]):
            continue
        obj = cands["obj"].astype(np.float64)
        image_max.append(float(obj.max()))
        boxes = torch.as_tensor(np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4))
        iou = box_iou(boxes, torch.as_tensor(cands["boxes"]))  # [G, N], both xyxy in the image's pixels; N > 0
        counted_iou = iou[torch.as_tensor(record.not_difficult)]  # [G', N]: the boxes that count
        best, which = counted_iou.max(dim=1)  # per counted box (none: empty)
        found = best >= MATCH_IOU
        matched.extend(obj[which[found].numpy()].tolist())
        labels = np.asarray(record.labels).reshape(-1)[np.asarray(record.not_difficult, dtype=bool)]
        probs = np.asarray(cands["cls"], dtype=np.float64)
        for j, label in enumerate(labels.tolist()):
            stats = per_class[names[int(label)]]
            stats["found"].append(float(found[j]))
            stats["cands"].append(float((counted_iou[j] >= MATCH_IOU).sum()))
            if found[j]:
                stats["obj"].append(float(obj[int(which[j])]))
                stats["cls"].append(float(probs[int(which[j]), int(label)]))
        missed += int((~found).sum())
        counted += int(np.sum(record.not_difficult))
        is_background = (iou < BACKGROUND_IOU).all(dim=0)  # no boxes: every candidate
        background.extend(obj[is_background.numpy()].tolist())
        sure = is_background & torch.as_tensor(obj >= CONFIDENT)
        kept = nms(torch.as_tensor(cands["boxes"])[sure], torch.as_tensor(obj[sure.numpy()], dtype=torch.float32), MATCH_IOU)
        confident_classes.extend(np.asarray(cands["cls"], dtype=np.float32)[sure.numpy()][kept.numpy()].argmax(axis=1).tolist())
    values = np.asarray(matched) if matched else np.zeros(1)
    if confident_classes:
        counts = np.bincount(confident_classes, minlength=len(index.class_names))
        top = int(counts.argmax())
        top_class = f"{index.class_names[top]} {counts[top] / counts.sum():.2f}"
    else:
        top_class = "-"
    return {"images": len(image_max), "gt_boxes": len(matched) + missed,
            "matched": len(matched) / max(1, len(matched) + missed),
            "obj_mean": float(values.mean()), "obj_p10": float(np.percentile(values, 10)),
            "obj_median": float(np.median(values)), "obj_p90": float(np.percentile(values, 90)),
            "obj_ge_0.9": float((values >= 0.9).mean()),
            "bg_obj_mean": float(np.mean(background)) if background else 0.0,
            "img_max_median": float(np.median(image_max)) if image_max else 0.0,
            "gt_per_image": counted / max(1, len(image_max)),
            "bg_conf_per_image": len(confident_classes) / max(1, len(image_max)), "bg_conf_top_class": top_class,
            "per_class": {c: {"gt_boxes": len(v["found"]), "matched": _mean(v["found"]), "cands_per_box": _mean(v["cands"]),
                              "obj_median": float(np.median(v["obj"])) if v["obj"] else 0.0, "cls_prob": _mean(v["cls"])}
                          for c, v in per_class.items()}}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def main() -> int:
    args = parse_args()
    command = "python benchmarks/diagnostics/diagnose_teacher_objectness.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "diagnose_teacher_objectness.json", machine_info(1), command)
    torch.set_num_threads(1)  # no timing: leave the other core to a training run
    data = dict(load_config(args.config, {"data.root": args.data}).data)
    index = read_split(data, args.split)
    for i, path in enumerate(args.teachers):
        label = f"{path.stem}@{file_sha256(path)[:8]}"
        name = args.names[i] if args.names else label
        if results.has(teacher=label, split=args.split, top_n=args.top_n) and all(
                "per_class" in r for r in results.rows if r.get("teacher") == label):
            continue  # rows made before the confident-background and per-class columns existed are computed again
        teacher = load_teacher({"checkpoint": str(path), "trust": args.trust_teacher, "imgsz": args.imgsz},
                               list(index.class_names), args.imgsz)
        cache = TeacherCache.load_or_build(teacher, path, index.records, args.top_n)
        row: dict[str, Any] = {"name": name, "teacher": label, "checkpoint": relative_path(path, REPO),
                               "dataset": Path(index.source).name, "split": args.split, "top_n": args.top_n,
                               "imgsz": int(teacher.imgsz), "params": count_params(teacher),
                               "flops": None, "onnx_latency_ms": None, "mAP50": None, "AP": None,  # not measured here
                               **objectness_stats(cache, index)}
        results.add(row, key=("teacher", "split", "top_n"))
        print(f"{name}: {row['matched']:.1%} of ground truth matched, objectness there {row['obj_mean']:.3f} "
              f"(median {row['obj_median']:.3f}), background {row['bg_obj_mean']:.3f}", flush=True)
    columns = ["name", "split", "images", "gt_boxes", "matched", "obj_mean", "obj_p10", "obj_median", "obj_p90",
               "obj_ge_0.9", "bg_obj_mean", "img_max_median", "gt_per_image", "bg_conf_per_image", "bg_conf_top_class"]
    text = ("Objectness of each teacher's cached candidates (top-N per image, the candidates distillation trains on): at "
            f"the candidate that best matches each ground-truth box (IoU >= {MATCH_IOU}; `matched`: the fraction found), "
            f"and on background candidates (IoU < {BACKGROUND_IOU} with every box). Objectness scaling weights a cell's "
            f"teacher terms by this value. `bg_conf_per_image`: distinct background candidates at objectness >= "
            f"{CONFIDENT} per image (NMS at IoU {MATCH_IOU}), with the class most of them get.\n\n" + markdown_table(results.rows, columns)
            + "\n\n**Per class** (ground-truth boxes of each class: `matched` at IoU >= 0.5, `cands_per_box`: candidates at "
            "IoU >= 0.5 per box, `obj_median` of the best match, `cls_prob`: the probability it gives the box's class).\n\n"
            + markdown_table([{"name": r["name"], "split": r["split"], "class": c, **v}
                              for r in results.rows for c, v in r.get("per_class", {}).items()],
                             ["name", "split", "class", "gt_boxes", "matched", "cands_per_box", "obj_median", "cls_prob"]) + "\n")
    write_markdown(RESULTS / "diagnose_teacher_objectness.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
