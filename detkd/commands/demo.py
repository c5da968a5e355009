"""detkd demo on the built-in dataset: the whole pipeline, as `make demo` runs it.

Stages, outputs under --work-dir (rerunning reuses what is already done, an interrupted training resumes;
a model folder trained with other settings is refused, so pick another --work-dir when changing them):
  1. generate the built-in dataset (standard preset: VOC layout + COCO JSON + unlabeled folder);
  2. check it with the dataset checker (the same checks training applies);
  3. convert its VOC val split to COCO JSON, confirm it equals the generator's COCO file, and
     evaluate a sanity detections file (perturbed ground truth) to exercise the metrics;
  4. train the teacher (YOLOv2-style);
  5. distil the F-YOLO student from it, with the unlabeled images mixed in (tools/train_distill.py's pipeline);
  6. train the same student on labels only (the baseline distillation must beat);
  7. evaluate all three on the test split, export each to ONNX (checked against PyTorch), time them,
     and write the mAP-vs-FPS table (results.md, results.json) and plot (results.png).

The console shows one line per training epoch; each run's full log is in its folder (--verbose
prints it too). `benchmarks/demo_seeds.py` runs this demo for several seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.config import add_verbose_argument, ensure_generated, load_config
from detkd.data.sources import read_split
from detkd.engine.console import set_verbose
from detkd.commands import command_line
from detkd.errors import add_debug_argument, run_tool

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/
COLUMNS = ["name", "epochs", "imgsz", "params", "flops", "mAP50", "AP", "onnx_latency_ms", "onnx_fps", "speedup"]
MODELS = ("teacher", "student_distilled", "student_labels_only")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--data-root", help="where the built-in dataset is generated (default: <work-dir>/data)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of all three models (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="student training epochs (default: %(default)s)")
    parser.add_argument("--teacher-epochs", type=int, default=20, help="teacher training epochs (default: %(default)s)")
    parser.add_argument("--imgsz", type=int, default=160, help="network input size (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.25, help="student width multiplier (default: %(default)s)")
    parser.add_argument("--teacher-width", type=float, default=0.375, help="teacher width multiplier (default: %(default)s)")
    parser.add_argument("--fp32", action="store_true",
                        help="train in float32 even on a CPU with native bfloat16 (default: bfloat16 autocast there)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency measurement (default: %(default)s)")
    add_verbose_argument(parser)
    add_debug_argument(parser)
    return parser.parse_args(argv)


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def data_stages(cfg: Any, work: Path) -> int:
    """Stages 1-3; returns an exit status (0: go on)."""
    from detkd.data.check import check_dataset
    from detkd.data.synthetic import DEFAULT_PRESET, perturb_detections
    from detkd.data.writers import coco_dict, write_coco
    from detkd.engine.metrics import evaluate_detections
    from detkd.fileio import atomic_write_json

    stage("1/7 built-in dataset")
    ensure_generated(cfg.data)
    print(f"dataset ready in {cfg.data['root']} (preset {cfg.data['generate'].get('preset') or DEFAULT_PRESET})")
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


def _train(cfg: Any, work: Path, name: str, distill: bool = False) -> Path:
    """Train one model, continue its interrupted run, or reuse its finished one; returns its best
    checkpoint. A folder trained with other settings (e.g. another --imgsz) is refused by the run
    state with a message, never reused as if it were new."""
    from detkd.distill.runner import run_distill
    from detkd.engine.run_state import best_checkpoint
    from detkd.engine.runner import build_runner, is_finished

    if distill:
        run_distill(cfg, work, resume=True, name=name)
    elif not is_finished(cfg, work):
        build_runner(cfg, work, resume=True, stage=name).train()
    return best_checkpoint(work)


def model_stages(cfgs: dict[str, Any], work: Path, threads: int) -> list[dict[str, Any]]:
    """Stages 4-7; returns the results rows (teacher, distilled student, labels-only student)."""
    from detkd.engine.benchmark import evaluate_and_time, interleaved_onnx_latency, machine_info
    from detkd.engine.checkpoint import load_detector
    from detkd.engine.results import ResultsFile, markdown_table, paired_speedup, plot_map_vs_fps, write_markdown
    from detkd.export.onnx import sample_images

    teacher_cfg, distill_cfg, student_cfg = (cfgs[m] for m in MODELS)
    stage(f"4/7 train the teacher (YOLOv2-style, width {teacher_cfg.model.width}, {teacher_cfg.train.epochs} epochs, "
          f"{teacher_cfg.imgsz} px)")
    teacher = _train(teacher_cfg, work / "teacher", "teacher")
    stage(f"5/7 distil the F-YOLO student (width {distill_cfg.model.width}, {distill_cfg.train.epochs} epochs) "
          f"with unlabeled images (ratio {distill_cfg.unlabeled.ratio})")
    distill_cfg.teacher = dict(distill_cfg.teacher, checkpoint=str(teacher))
    distilled = _train(distill_cfg, work / "student_distilled", "distilled", distill=True)
    stage(f"6/7 train the same student on labels only ({student_cfg.train.epochs} epochs)")
    labels_only = _train(student_cfg, work / "student_labels_only", "labels_only")
    stage("7/7 test-split evaluation, ONNX export, latency (the three graphs timed in turn, 5 rounds)")
    results = ResultsFile(work / "results.json", machine_info(threads), command_line(), fresh=True)
    test = read_split(dict(student_cfg.data), "test")
    rows = []
    for name, ckpt in zip(MODELS, (teacher, distilled, labels_only), strict=True):
        cfg = cfgs[name]
        row = evaluate_and_time(name, load_detector(ckpt), test, work, threads, dataset="built-in (test)")
        rows.append({**row, "epochs": int(cfg.train.epochs), "seed": int(cfg.train.seed), "checkpoint": str(ckpt),
                     "split": "test", "selected_on": "val"})
    # the three graphs timed in turn, in one process: each speedup is a ratio of one measurement's rounds
    graphs = {row["name"]: (work / f"{row['name']}.onnx", sample_images(test, int(row["imgsz"]), count=1)) for row in rows}
    timing = interleaved_onnx_latency(graphs, threads)
    for row in rows:  # the speedup is saved with each row (benchmarks/demo_seeds.py reads it)
        row.update(onnx_latency_ms=timing["ms"][row["name"]], timing=timing,
                   speedup=1.0 if row is rows[0] else paired_speedup(timing, row["name"], rows[0]["name"]))
        results.add(row)
    write_markdown(work / "results.md", markdown_table(rows, COLUMNS))
    plot_map_vs_fps(rows, work / "results.png", f"built-in dataset, test split, {threads} threads")
    return rows


def demo_configs(args: argparse.Namespace) -> dict[str, Any]:
    """The three models' configs: the shipped built-in-dataset configs with the demo's sizes and seed."""
    work = Path(args.work_dir)
    common = {"data.root": str(args.data_root or work / "data"), "imgsz": args.imgsz, "train.seed": args.seed,
              "train.cpu_amp": not args.fp32}
    # validate a few times (students: halfway and at the end; the teacher: every quarter): the best
    # checkpoint is chosen from these, and each validation costs time
    student = {**common, "model.width": args.width, "train.epochs": args.epochs, "train.val_interval": max(1, args.epochs // 2)}
    return {
        "teacher": load_config(CONFIGS / "train" / "yolov2_synthetic.py",
                               {**common, "model.width": args.teacher_width, "train.epochs": args.teacher_epochs,
                                "train.val_interval": max(1, args.teacher_epochs // 4)}),
        "student_distilled": load_config(CONFIGS / "distill" / "fyolo_synthetic.py", student),
        "student_labels_only": load_config(CONFIGS / "train" / "fyolo_synthetic.py", student),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_verbose(args.verbose)
    return run_tool(lambda: demo(args), args.debug)


def demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cfgs = demo_configs(args)
    status = data_stages(cfgs["student_labels_only"], work)
    if status:
        return status
    rows = model_stages(cfgs, work, args.threads)
    from detkd.engine.results import markdown_table

    minutes, seconds = divmod(round(time.perf_counter() - start), 60)
    print(f"\n== results (built-in dataset, test split, seed {args.seed}, ONNX Runtime batch 1, {args.threads} threads; "
          f"{minutes} min {seconds} s)\n")
    print(markdown_table(rows, ["name", "params", "flops", "mAP50", "AP", "onnx_latency_ms", "speedup"]))
    gain = rows[1]["mAP50"] - rows[2]["mAP50"]
    print(f"distillation: {gain * 100:+.1f} mAP50 points over the same student trained on labels only; "
          f"the student runs {rows[1]['speedup']:.1f}x faster than its teacher")
    print(f"written: {work / 'results.md'}, {work / 'results.json'}, {work / 'results.png'}, "
          f"{work}/<model>.onnx, and each model's run folder (checkpoints, logs) under {work}")
    return 0
