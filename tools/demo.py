#!/usr/bin/env python
"""detkd demo on the built-in synthetic dataset: the whole pipeline (what `make demo` runs).

Stages, outputs under --work-dir (rerunning reuses what is already done, an interrupted training resumes):
  1. generate the built-in dataset (VOC layout + COCO JSON + unlabeled folder);
  2. check it with the dataset checker (the same checks training applies);
  3. convert its VOC val split to COCO JSON, confirm it equals the generator's COCO file, and
     evaluate a sanity detections file (perturbed ground truth) to exercise the metrics;
  4. train the teacher (YOLOv2-style);
  5. distil the F-YOLO student from it, with the unlabeled images mixed in (tools/train_distill.py's pipeline);
  6. train the same student on labels only (the baseline distillation must beat);
  7. evaluate all three on the test split, export each to ONNX (checked against PyTorch), time them,
     and write the mAP-vs-FPS table (results.md, results.json) and plot (results.png).
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

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COLUMNS = ["name", "epochs", "imgsz", "params", "flops", "mAP50", "AP", "torch_latency_ms", "onnx_latency_ms", "onnx_fps", "speedup"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="student training epochs (default: %(default)s)")
    parser.add_argument("--teacher-epochs", type=int, default=10, help="teacher training epochs (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=160, help="network input size (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.25, help="student width multiplier (default: %(default)s)")
    parser.add_argument("--teacher-width", type=float, default=0.25, help="teacher width multiplier (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency measurement (default: %(default)s)")
    return parser.parse_args(argv)


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def data_stages(cfg, work: Path) -> int:
    stage("1/7 built-in dataset")
    ensure_generated(cfg.data)
    print(f"dataset ready in {cfg.data['root']}")
    stage("2/7 dataset check (train split)")
    report = check_dataset(cfg.data["root"], "voc", "train")
    print(report.to_text(max_defects=10))
    atomic_write_json(work / "check_train.json", report.to_dict())
    if report.fatal:
        return 2
    stage("3/7 VOC -> COCO conversion and a sanity evaluation (val split)")
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


def _train(cfg, work: Path, distill: bool = False) -> Path:
    """Train (or resume, or reuse) one model; returns its best checkpoint."""
    from detkd.distill.runner import run_distill
    from detkd.engine.checkpoint import best_checkpoint
    from detkd.engine.runner import build_runner

    if not (work / f"epoch_{cfg.train.epochs}.pth").is_file():
        resume = (work / "last_checkpoint").is_file() or (work / "hint_stage").is_dir()
        if distill:
            run_distill(cfg, work, resume=resume)
        else:
            build_runner(cfg, work, resume=resume).train()
    return best_checkpoint(work)


def model_stages(cfgs: dict, work: Path, threads: int) -> None:
    from detkd.engine.benchmark import evaluate_and_time, machine_info
    from detkd.engine.checkpoint import load_detector
    from detkd.engine.results import ResultsFile, markdown_table, plot_map_vs_fps, write_markdown

    teacher_cfg, distill_cfg, student_cfg = cfgs["teacher"], cfgs["distill"], cfgs["labels_only"]
    stage(f"4/7 train the teacher (YOLOv2-style, width {teacher_cfg.model.width}, {teacher_cfg.train.epochs} epochs, {teacher_cfg.imgsz} px)")
    teacher = _train(teacher_cfg, work / "teacher")
    stage(f"5/7 distil the F-YOLO student (width {distill_cfg.model.width}, {distill_cfg.train.epochs} epochs) "
          f"with unlabeled images (ratio {distill_cfg.unlabeled.ratio})")
    distill_cfg.teacher = dict(distill_cfg.teacher, checkpoint=str(teacher))
    distilled = _train(distill_cfg, work / "student_distilled", distill=True)
    stage(f"6/7 train the same student on labels only ({student_cfg.train.epochs} epochs)")
    labels_only = _train(student_cfg, work / "student_labels_only")
    stage("7/7 test-split evaluation, ONNX export, latency")
    results = ResultsFile(work / "results.json", machine_info(threads), "make demo")
    test = read_split(dict(student_cfg.data), "test")
    runs = [("teacher", teacher, teacher_cfg), ("student_distilled", distilled, distill_cfg),
            ("student_labels_only", labels_only, student_cfg)]
    for name, ckpt, cfg in runs:
        row = evaluate_and_time(name, load_detector(ckpt), test, work, threads, dataset="synthetic")
        results.add({**row, "epochs": int(cfg.train.epochs), "checkpoint": str(ckpt)})
    rows = [r for name, _, _ in runs for r in results.rows if r["name"] == name]
    for r in rows:
        r["speedup"] = rows[0]["onnx_latency_ms"] / r["onnx_latency_ms"]
    table = markdown_table(rows, COLUMNS)
    write_markdown(work / "results.md", table)
    plot_map_vs_fps(rows, work / "results.png", f"built-in dataset, test split, {threads} threads")
    print(table)
    print(f"written: {work / 'results.md'}, results.json, results.png, and an .onnx file per model")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir)
    common = {"data.root": str(work / "data"), "imgsz": args.imgsz, "train.val_interval": 4, "train.log_interval": 20}
    student = {**common, "model.width": args.width, "train.epochs": args.epochs}
    cfgs = {
        "teacher": load_config(CONFIGS / "train" / "yolov2_synthetic.py",
                               {**common, "model.width": args.teacher_width, "train.epochs": args.teacher_epochs}),
        "distill": load_config(CONFIGS / "distill" / "fyolo_synthetic.py", student),
        "labels_only": load_config(CONFIGS / "train" / "fyolo_synthetic.py", student),
    }
    status = data_stages(cfgs["labels_only"], work)
    if status:
        return status
    model_stages(cfgs, work, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
