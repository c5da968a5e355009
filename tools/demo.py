#!/usr/bin/env python
"""detkd demo on the built-in synthetic dataset (what `make demo` runs, a few minutes on 2 cores).

Stages, outputs under --work-dir (rerunning reuses what is already done):
  1. generate the built-in dataset (VOC layout + COCO JSON + unlabeled folder);
  2. check it with the dataset checker (the same checks training applies);
  3. convert its VOC val split to COCO JSON, confirm it equals the generator's COCO file, and
     evaluate a sanity detections file (perturbed ground truth) to exercise the metrics;
  4. train a small F-YOLO student (mmengine Runner: checkpoints, logs, best by mAP50);
  5. evaluate it on the test split, export it to ONNX (checked against PyTorch), time it on both
     backends, and write the results table (results.md, results.json) and mAP-vs-FPS plot (results.png).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.config import ensure_generated, load_config, read_split
from detkd.data.check import check_dataset
from detkd.data.synthetic import perturb_detections
from detkd.data.writers import coco_dict, write_coco
from detkd.engine.metrics import evaluate_detections
from detkd.fileio import atomic_write_json

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "fyolo_synthetic.py"
COLUMNS = ["name", "imgsz", "params", "flops", "mAP50", "AP", "torch_latency_ms", "onnx_latency_ms", "onnx_fps", "decode_ms"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=12, help="student training epochs (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=192, help="network input size (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.25, help="student width multiplier (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency measurement (default: %(default)s)")
    return parser.parse_args(argv)


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def data_stages(cfg, work: Path) -> int:
    stage("1/5 built-in dataset")
    ensure_generated(cfg.data)
    print(f"dataset ready in {cfg.data['root']}")
    stage("2/5 dataset check (train split)")
    report = check_dataset(cfg.data["root"], "voc", "train")
    print(report.to_text(max_defects=10))
    atomic_write_json(work / "check_train.json", report.to_dict())
    if report.fatal:
        return 2
    stage("3/5 VOC -> COCO conversion and a sanity evaluation (val split)")
    val = read_split(dict(cfg.data), "val")
    converted = write_coco(val, work / "val_from_voc.json", val.image_root)
    generated = json.loads((Path(cfg.data["root"]) / "annotations" / "instances_val.json").read_text())
    same = all(coco_dict(val, val.image_root)[k] == generated[k] for k in ("images", "annotations", "categories"))
    print(f"{converted}: {len(val.records)} images, {val.num_boxes} boxes; equal to the generator's COCO file: {same}")
    if not same:
        return 1
    dets = atomic_write_json(work / "sanity_dets.json", perturb_detections(generated, seed=0), indent=None)
    metrics = evaluate_detections(converted, dets)
    print(f"sanity detections (jittered/missed/confused ground truth): AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}, "
          f"VOC07 AP50 {metrics['voc07_AP50']:.3f}")
    return 0


def model_stages(cfg, work: Path, threads: int) -> None:
    from detkd.engine.benchmark import evaluate_and_time, machine_info
    from detkd.engine.checkpoint import load_detector
    from detkd.engine.results import ResultsFile, markdown_table, plot_map_vs_fps, write_markdown
    from detkd.engine.runner import build_runner

    stage(f"4/5 train the F-YOLO student ({cfg.train.epochs} epochs, {cfg.imgsz} px)")
    train_dir = work / "fyolo"
    if not (train_dir / f"epoch_{cfg.train.epochs}.pth").is_file():
        build_runner(cfg, train_dir, resume=(train_dir / "last_checkpoint").is_file()).train()
    best = sorted(train_dir.glob("best_coco_AP50_epoch_*.pth"))[-1]
    stage("5/5 test-split evaluation, ONNX export, latency")
    results = ResultsFile(work / "results.json", machine_info(threads), "make demo")
    row = evaluate_and_time("fyolo_student", load_detector(best), read_split(dict(cfg.data), "test"), work, threads, dataset="synthetic")
    results.add({**row, "epochs": int(cfg.train.epochs), "checkpoint": str(best)})
    table = markdown_table(results.rows, COLUMNS)
    write_markdown(work / "results.md", table)
    plot_map_vs_fps(results.rows, work / "results.png", f"built-in dataset, test split, {threads} threads")
    print(table)
    print(f"written: {work / 'results.md'}, results.json, results.png, fyolo_student.onnx")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir)
    cfg = load_config(CONFIG, {
        "data.root": str(work / "data"), "imgsz": args.imgsz, "model.width": args.width,
        "train.epochs": args.epochs, "train.val_interval": 4, "train.log_interval": 20,
    })
    status = data_stages(cfg, work)
    if status:
        return status
    model_stages(cfg, work, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
