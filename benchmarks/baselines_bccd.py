#!/usr/bin/env python
"""Baselines on BCCD: every detector trained from scratch with the same epochs, then measured.

    python benchmarks/baselines_bccd.py [--data ../shared/data/bccd] [--epochs 30] [--threads 2]

Rows (``name``): ``teacher`` (YOLOv2-style, width 0.5), ``tiny_yolo`` (Tiny-YOLOv2, width 0.5),
``fyolo`` (F-YOLO student, width 0.5), ``ssd_cpu`` (VGG SSD, width 0.25), all trained by
``tools/train.py`` with ``configs/train/*_bccd.py``, and ``yolov8n`` from ultralytics' yaml,
trained by ultralytics' own trainer. Train on ``train``, evaluate on ``val``, 320 px. Every model
is evaluated by the same code (letterbox 320, our decode + NMS, pycocotools), exported to ONNX
(parity-checked) and timed at batch 1 with ``--threads`` threads, all in one phase at the end so
the timings share one machine state.

Resumable: training resumes from its last checkpoint; rows already in the results file are skipped.
Outputs: ``benchmarks/results/baselines_bccd.{json,md,png}``; work files in ``benchmarks/work/``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from common import DATA_ROOTS, REPO, RESULTS

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.sources import read_split
from detkd.engine.benchmark import evaluate_and_time, machine_info
from detkd.engine.checkpoint import load_detector
from detkd.engine.run_state import RunState, best_checkpoint
from detkd.engine.results import ResultsFile, markdown_table, plot_map_vs_fps, write_markdown

WORK = REPO / "benchmarks" / "work" / "baselines_bccd"
DETKD_ROWS = {"teacher": "yolov2", "tiny_yolo": "tiny_yolov2", "fyolo": "fyolo", "ssd_cpu": "ssd_cpu"}
IMGSZ = 320
COLUMNS = ["name", "model", "epochs", "imgsz", "params", "flops", "mAP50", "AP", "onnx_latency_ms", "onnx_fps", "torch_latency_ms", "decode_ms"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA_ROOTS["bccd"]), help="BCCD root (VOC layout)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency measurements")
    parser.add_argument("--only", nargs="+", choices=[*DETKD_ROWS, "yolov8n"], help="run only these rows")
    return parser.parse_args()


def train_detkd(name: str, model: str, args: argparse.Namespace) -> Path:
    """Train (or resume) one detkd model; returns its best checkpoint."""
    work = WORK / name
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "train" / f"{model}_bccd.py"),
           "--work-dir", str(work), "--cfg-options", f"data.root={args.data}", f"train.epochs={args.epochs}"]
    cmd.append("--resume")  # continue an interrupted run (a new folder starts fresh)
    if not RunState(work).finished():
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return best_checkpoint(work)


def train_yolov8n(args: argparse.Namespace) -> Path:
    from detkd.data.voc import read_voc
    from detkd.data.writers import write_yolo
    from detkd.models.ultralytics_adapter import train_ultralytics

    data_yaml = WORK / "yolo_data" / "data.yaml"
    if not data_yaml.is_file():
        for split in ("train", "val"):
            write_yolo(read_voc(args.data, split, ["Platelets", "RBC", "WBC"]), data_yaml.parent, split)
    return train_ultralytics("yolov8n.yaml", data_yaml, args.epochs, IMGSZ, batch=16, project=WORK, name="yolov8n", workers=2)


def main() -> int:
    args = parse_args()
    command = "python benchmarks/baselines_bccd.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "baselines_bccd.json", machine_info(args.threads), command.strip())
    wanted = args.only or [*DETKD_ROWS, "yolov8n"]
    checkpoints = {}
    for name in wanted:  # phase 1: training (long, resumable)
        if results.has(name=name, dataset="bccd"):
            continue
        checkpoints[name] = train_yolov8n(args) if name == "yolov8n" else train_detkd(name, DETKD_ROWS[name], args)
    cfg = load_config(REPO / "configs" / "train" / "fyolo_bccd.py", {"data.root": args.data})
    val = read_split(dict(cfg.data), "val")
    for name, ckpt in checkpoints.items():  # phase 2: measure, same machine state for every row
        if name == "yolov8n":
            from detkd.models.ultralytics_adapter import load_ultralytics

            detector = load_ultralytics(str(ckpt), class_names=val.class_names, imgsz=IMGSZ, trust=True)  # our own file
        else:
            detector = load_detector(ckpt)
        row = evaluate_and_time(name, detector, val, WORK / "onnx", args.threads, dataset="bccd")
        row.update(model=DETKD_ROWS.get(name, "yolov8n"), epochs=args.epochs, checkpoint=str(ckpt.relative_to(REPO)), split="val")
        results.add(row)
        print(f"{name}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f} onnx {row['onnx_latency_ms']:.1f} ms", flush=True)
    rows = [r for n in [*DETKD_ROWS, "yolov8n"] for r in results.rows if r["name"] == n]
    m = results.data["machine"]
    header = (f"BCCD val, trained from scratch on train for {args.epochs} epochs at {IMGSZ} px. Latency: batch 1, "
              f"median of 30 runs, {m['threads']} threads, {m['cpu']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}.\n\n")
    write_markdown(RESULTS / "baselines_bccd.md", header + markdown_table(rows, COLUMNS))
    plot_map_vs_fps(rows, RESULTS / "baselines_bccd.png", f"BCCD val, {args.epochs} epochs from scratch, {IMGSZ} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
