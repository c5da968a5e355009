#!/usr/bin/env python
"""Distillation ablation: the F-YOLO student trained with each part of detkd's distillation added in turn.

    python benchmarks/distill_ablation.py --dataset bccd [--data ../shared/data/bccd] [--epochs 20]
        [--teacher-ckpt CKPT] [--threads 2] [--only METHOD ...]
    python benchmarks/distill_ablation.py --dataset synthetic --epochs 15

Rows (``method``), every one with the same student (F-YOLO width 0.5), schedule and epochs:
``labels_only`` (tools/train.py), ``kd_plain`` (teacher terms without objectness scaling, no FM-NMS),
``kd_objscale`` (+ objectness scaling), ``kd_objscale_fmnms`` (+ FM-NMS, K=3, mode class),
``kd_full_unlabeled`` (+ unlabeled images), ``kd_hints`` (+ FitNets stage 1 for 3 extra epochs), and
``teacher``; peer rows ``ultralytics_labels_only`` and ``ultralytics_kd`` (``--only`` them: YOLOv8n
trained by ultralytics from its yaml, without / with ultralytics' own ``distill_model`` distillation
from a YOLOv8s trained the same way, same epochs and 320 px). On BCCD the teacher is the CPU-scale SSD (configs/train/ssd_cpu_bccd.py, the strongest
detkd baseline, projected onto the student's grid) and the unlabeled images are the *test* split's
images with their labels dropped (72 images, ratio 0.35 = all of them each epoch); rows are evaluated
on val. On the built-in dataset the teacher is the YOLOv2-style model (configs/train/yolov2_synthetic.py)
and the unlabeled images are its unlabeled split (ratio 0.5); evaluated on val.

Without --teacher-ckpt the teacher is trained first (tools/train.py, --epochs). Resumable: every
training resumes from its last checkpoint and rows already in the results file are skipped.
Latency (ONNX Runtime, batch 1, median of 30) is measured for all rows in one phase at the end.
Outputs: benchmarks/results/distill_ablation.{json,md,png}; work files in benchmarks/work/distill_ablation/.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.sources import read_split
from detkd.engine.benchmark import evaluate_and_time, machine_info
from detkd.engine.checkpoint import load_detector
from detkd.engine.run_state import RunState, best_checkpoint
from detkd.engine.results import ResultsFile, markdown_table, plot_map_vs_fps, write_markdown

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "distill_ablation"
METHODS = ["labels_only", "kd_plain", "kd_objscale", "kd_objscale_fmnms", "kd_full_unlabeled", "kd_hints", "teacher"]
PEERS = ["ultralytics_labels_only", "ultralytics_kd"]  # YOLOv8n without / with ultralytics' distillation from YOLOv8s
DATASETS = {
    "bccd": dict(teacher="ssd_cpu_bccd", distill="fyolo_bccd", hints="fyolo_bccd_hints", student="fyolo_bccd",
                 unlabeled=["unlabeled.split=test", "unlabeled.ratio=0.35"], data=str(REPO.parent / "shared" / "data" / "bccd")),
    "synthetic": dict(teacher="yolov2_synthetic", distill="fyolo_synthetic", hints="fyolo_synthetic_hints",
                      student="fyolo_synthetic", unlabeled=["unlabeled.ratio=0.5"], data=None),
}
NO_UNLABELED = ["unlabeled.ratio=0.0"]
OPTIONS = {  # cfg-options per distillation row
    "kd_plain": ["distill.scale_by_objectness=False", "distill.fm_nms.enabled=False", *NO_UNLABELED],
    "kd_objscale": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=False", *NO_UNLABELED],
    "kd_objscale_fmnms": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=True", *NO_UNLABELED],
    "kd_full_unlabeled": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=True"],  # + dataset's unlabeled
    "kd_hints": ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=True"],
}
COLUMNS = ["method", "dataset", "epochs", "imgsz", "params", "flops", "mAP50", "AP", "onnx_latency_ms", "speedup", "teacher_model"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), default="bccd")
    parser.add_argument("--data", help="dataset root (default: BCCD's shared copy; the built-in one is generated)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every student row (and of a teacher trained here)")
    parser.add_argument("--teacher-ckpt", help="use this trained teacher instead of training one")
    parser.add_argument("--teacher-epochs", type=int, help="epochs of a teacher trained here (default: --epochs)")
    parser.add_argument("--imgsz", type=int, help="input size of every row (default: the dataset config's)")
    parser.add_argument("--width", type=float, help="student width multiplier (default: the config's, 0.5)")
    parser.add_argument("--teacher-width", type=float, help="width of a teacher trained here (default: the config's)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency measurements")
    parser.add_argument("--retime", action="store_true",
                        help="only re-measure the latency of every row already in the results file, in one quiet phase")
    parser.add_argument("--only", nargs="+", choices=METHODS + PEERS, help="run only these rows (default: the detkd rows)")
    return parser.parse_args()


def run(cmd: list[str]) -> None:
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def common_options(args: argparse.Namespace, method: str) -> list[str]:
    data = args.data or DATASETS[args.dataset]["data"]
    teacher = method == "teacher"
    epochs = (args.teacher_epochs or args.epochs) if teacher else args.epochs
    width = args.teacher_width if teacher else args.width
    options = [f"train.epochs={epochs}"]
    if args.imgsz:
        options.append(f"imgsz={args.imgsz}")
    if width:
        options.append(f"model.width={width}")
    if data:
        options.append(f"data.root={data}")
    else:  # the built-in dataset, generated once for all rows
        options.append(f"data.root={WORK / args.dataset / 'data'}")
    return options


def train_row(method: str, teacher: Path | None, args: argparse.Namespace) -> Path:
    """Train (or resume) one row's model; returns its best checkpoint."""
    spec = DATASETS[args.dataset]
    work = WORK / args.dataset / method
    opts = common_options(args, method)
    if method in ("labels_only", "teacher"):
        config = spec["student"] if method == "labels_only" else spec["teacher"]
        cmd = [sys.executable, "tools/train.py", f"configs/train/{config}.py", "--work-dir", str(work), "--cfg-options", *opts]
    else:
        config = spec["hints"] if method == "kd_hints" else spec["distill"]
        extra = OPTIONS[method] + (spec["unlabeled"] if method in ("kd_full_unlabeled", "kd_hints") else [])
        cmd = [sys.executable, "tools/train_distill.py", f"configs/distill/{config}.py", "--work-dir", str(work),
               "--teacher-ckpt", str(teacher), "--cfg-options", *opts, *extra]
    if not RunState(work).finished():  # --resume: continue an interrupted run (a new folder starts fresh)
        run([*cmd, "--resume"])
    return best_checkpoint(work)


def train_peer(method: str, args: argparse.Namespace) -> tuple[Path, Path]:
    """Peer rows: ultralytics' own trainer, YOLOv8n from its yaml, with ``distill_model`` = a YOLOv8s
    trained the same way for ``ultralytics_kd`` (ultralytics' default ``dis`` weight). Returns
    (checkpoint, teacher checkpoint)."""
    from detkd.data.voc import read_voc
    from detkd.data.writers import write_yolo
    from detkd.models.ultralytics_adapter import train_ultralytics

    if args.dataset != "bccd":
        raise SystemExit("peer rows are set up for --dataset bccd")
    work = WORK / args.dataset / "ultralytics"
    data_yaml = work / "yolo_data" / "data.yaml"
    if not data_yaml.is_file():
        root = args.data or DATASETS["bccd"]["data"]
        for split in ("train", "val"):
            write_yolo(read_voc(root, split, ["Platelets", "RBC", "WBC"]), data_yaml.parent, split)
    common = dict(data_yaml=data_yaml, epochs=args.epochs, imgsz=320, batch=16, project=work, workers=2)
    teacher = train_ultralytics("yolov8s.yaml", name="yolov8s_teacher", **common)
    if method == "ultralytics_labels_only":
        return train_ultralytics("yolov8n.yaml", name="yolov8n_labels_only", **common), teacher
    return train_ultralytics("yolov8n.yaml", name="yolov8n_kd", distill_model=str(teacher), **common), teacher


def _checkpoint_epochs(path: Path) -> int | None:
    from detkd.engine.checkpoint import load_checkpoint_file

    return load_checkpoint_file(path).get("meta", {}).get("epoch")


def retime(results: ResultsFile, args: argparse.Namespace) -> None:
    """Re-measure params/FLOPs/latency of every existing row of ``--dataset`` from its checkpoint and ONNX file, one
    after the other, so all rows share one machine state (accuracy columns are kept)."""
    from detkd.engine.benchmark import benchmark_detector
    from detkd.export.onnx import sample_images

    for row in [r for r in results.rows if r["dataset"] == args.dataset]:
        ckpt = REPO / row["checkpoint"] if not Path(row["checkpoint"]).is_absolute() else Path(row["checkpoint"])
        if row["method"] in PEERS:
            from detkd.models.ultralytics_adapter import load_ultralytics

            detector = load_ultralytics(str(ckpt), imgsz=int(row["imgsz"]), trust=True)  # our own file
        else:
            detector = load_detector(ckpt)
        spec = DATASETS[row["dataset"]]
        cfg = load_config(REPO / "configs" / "train" / f"{spec['student']}.py",
                          {"data.root": args.data or spec["data"] or str(WORK / row["dataset"] / "data")})
        images = sample_images(read_split(dict(cfg.data), "val"), int(row["imgsz"]), count=1)
        onnx_path = WORK / "onnx" / f"{row['name']}.onnx"
        row.update(benchmark_detector(detector, int(row["imgsz"]), args.threads, onnx_path, image=images[:1]))
        results.add(row, key=("method", "dataset"))
        print(f"{row['name']}: onnx {row['onnx_latency_ms']:.2f} ms", flush=True)


def main() -> int:
    args = parse_args()
    command = "python benchmarks/distill_ablation.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "distill_ablation.json", machine_info(args.threads), command.strip())
    if args.retime:
        retime(results, args)
        write_report(results, args)
        return 0
    wanted = args.only or METHODS
    teacher = Path(args.teacher_ckpt) if args.teacher_ckpt else None
    todo = [m for m in wanted if not results.has(method=m, dataset=args.dataset)]
    if teacher is None and [m for m in todo if m in METHODS and m != "labels_only"]:
        teacher = train_row("teacher", None, args)
    checkpoints, teachers = {}, {}
    for m in todo:  # phase 1: train
        if m in PEERS:
            checkpoints[m], teachers[m] = train_peer(m, args)
        else:
            checkpoints[m], teachers[m] = (teacher if m == "teacher" else train_row(m, teacher, args)), teacher
    spec = DATASETS[args.dataset]
    cfg = load_config(REPO / "configs" / "train" / f"{spec['student']}.py",
                      {"data.root": args.data or spec["data"] or str(WORK / args.dataset / "data")})
    val = read_split(dict(cfg.data), "val")
    for method, ckpt in checkpoints.items():  # phase 2: measure, same machine state for every row
        assert ckpt is not None
        name = f"{args.dataset}_{method}"
        if method in PEERS:
            from detkd.models.ultralytics_adapter import load_ultralytics

            detector = load_ultralytics(str(ckpt), class_names=val.class_names, imgsz=int(cfg.imgsz), trust=True)  # our own file
        else:
            detector = load_detector(ckpt)
        row = evaluate_and_time(name, detector, val, WORK / "onnx", args.threads, dataset=args.dataset)
        row_teacher = teachers[method]
        epochs = args.epochs
        if method == "teacher":  # a given teacher: the epochs its checkpoint records
            epochs = _checkpoint_epochs(ckpt) if args.teacher_ckpt else args.teacher_epochs or args.epochs
        row.update(method=method, epochs=epochs, command=command.strip(),
                   checkpoint=str(ckpt.relative_to(REPO)) if ckpt.is_relative_to(REPO) else str(ckpt),
                   teacher=str(row_teacher.relative_to(REPO)) if row_teacher and row_teacher.is_relative_to(REPO) else
                   (str(row_teacher) if row_teacher else None), split="val",
                   teacher_model="yolov8s" if method in PEERS else DATASETS[args.dataset]["teacher"].rsplit("_", 1)[0])
        results.add(row, key=("method", "dataset"))
        print(f"{name}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f} onnx {row['onnx_latency_ms']:.1f} ms", flush=True)
    write_report(results, args)
    return 0


def write_report(results: ResultsFile, args: argparse.Namespace) -> None:
    parts = []
    rows_all = []
    for dataset in DATASETS:
        rows = [r for m in METHODS + PEERS for r in results.rows if r["method"] == m and r["dataset"] == dataset]
        if not rows:
            continue
        teacher = next((r for r in rows if r["method"] == "teacher"), None)
        for r in rows:
            r["speedup"] = teacher["onnx_latency_ms"] / r["onnx_latency_ms"] if teacher else None
            if r["method"] == "labels_only":  # trained without a teacher
                r["teacher_model"] = None
        rows_all += rows
        m = results.data["machine"]
        parts.append(f"**{dataset}** (val split; every student row is the same F-YOLO, epochs and input size per row in the table). Latency: ONNX Runtime, "
                     f"batch 1, median of 30 runs, {m['threads']} threads, {m['cpu']}, torch {m['torch']}, "
                     f"onnxruntime {m['onnxruntime']}.\n\n" + markdown_table(rows, COLUMNS))
    write_markdown(RESULTS / "distill_ablation.md", "\n\n".join(parts) + "\n")
    plot_map_vs_fps([dict(r, name=r["method"]) for r in rows_all], RESULTS / "distill_ablation.png",
                    "Distillation ablation: mAP50 vs ONNX Runtime FPS")


if __name__ == "__main__":
    sys.exit(main())
