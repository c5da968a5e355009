#!/usr/bin/env python
"""Teacher predictions computed once: step time and accuracy of cached vs online distillation.

    python benchmarks/teacher_cache.py --teacher-ckpt work_dirs/demo_seeds/seed_0/teacher/best_coco_AP50_epoch_20.pth
        [--seeds 0 1 2] [--data-root work_dirs/demo_seeds/data] [--work-dir work_dirs/teacher_cache]

The demo's setting (built-in dataset, standard preset, 160 px; F-YOLO width 0.25, 10 epochs,
unlabeled ratio 0.5, bfloat16 autocast on CPUs that have it) for five students per seed: labels
only, distilled from the online teacher, distilled from the teacher cache (top 100 candidates per
image; built once, reused by every seed), from a cache of every candidate (``cached_all``), and from
the online teacher read through the projection instead of directly (``online_projected``: the cached
teacher's route, which separates "projected" from "cached"). Each row records the median training step time (mmengine's per-iteration ``time``,
data loading included, epochs 2 and later) and the test-split mAP50 / AP. Rows are resumable
(``benchmarks/results/teacher_cache.json``); ``teacher_cache.md`` has the rows and per mode the mean ±
sd over seeds and the step time relative to labels-only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import REPO, RESULTS

from detkd.commands import demo
from detkd.data.sources import read_split
from detkd.distill.runner import run_distill
from detkd.engine.benchmark import machine_info, train_step_ms
from detkd.engine.checkpoint import load_detector
from detkd.engine.evaluate import evaluate_model
from detkd.engine.results import markdown_table, mean_sd, write_markdown
from detkd.engine.run_state import best_checkpoint
from detkd.engine.runner import build_runner, is_finished
from detkd.fileio import atomic_write_json

RESULTS_FILE = RESULTS / "teacher_cache.json"
# cached: top 100 candidates per image; cached_all: every one; online_projected: online, through the projection
MODES = ("labels_only", "online", "online_projected", "cached", "cached_all")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-ckpt", required=True, help="the trained teacher (e.g. a demo run's best checkpoint)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--data-root", type=Path, default=REPO / "work_dirs" / "demo_seeds" / "data")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs" / "teacher_cache")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="results file (default: %(default)s)")
    return parser.parse_args(argv)


def run_mode(mode: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    opts = argparse.Namespace(work_dir=str(args.work_dir), data_root=str(args.data_root), seed=seed, epochs=args.epochs,
                              teacher_epochs=20, imgsz=160, width=0.25, teacher_width=0.375, fp32=False)
    cfgs = demo.demo_configs(opts)
    work = args.work_dir / f"seed_{seed}" / mode
    start = time.perf_counter()
    if mode == "labels_only":
        cfg = cfgs["student_labels_only"]
        if not is_finished(cfg, work):
            build_runner(cfg, work, resume=True, stage=f"{mode}/{seed}").train()
    else:
        cfg = cfgs["student_distilled"]
        cfg.teacher = dict(cfg.teacher, checkpoint=str(args.teacher_ckpt), cache=mode.startswith("cached"),
                           cache_dir=str(args.work_dir / "cache"), cache_top_n=100_000 if mode == "cached_all" else 100,
                           direct=mode == "online")
        run_distill(cfg, work, resume=True, name=f"{mode}/{seed}")
    wall = time.perf_counter() - start
    metrics, _ = evaluate_model(load_detector(best_checkpoint(work)), read_split(dict(cfg.data), "test"), progress=False)
    return {"name": mode, "dataset": "built-in (test)", "seed": seed, "epochs": args.epochs, "mAP50": metrics["AP50"],
            "AP": metrics["AP"], "train_step_ms": train_step_ms(work), "wall_s": wall}


def summary(rows: list[dict[str, Any]]) -> str:
    lines = ["| mode | seeds | mAP50 | AP | step ms | step vs labels-only |", "|---|---|---|---|---|---|"]
    base = [r["train_step_ms"] for r in rows if r["name"] == "labels_only"]
    for mode in MODES:
        sel = [r for r in rows if r["name"] == mode]
        if not sel:
            continue

        step = statistics.fmean(r["train_step_ms"] for r in sel)
        ratio = f"{step / statistics.fmean(base):.2f}x" if base else "-"
        lines.append(f"| {mode} | {len(sel)} | {mean_sd([r['mAP50'] for r in sel])} | {mean_sd([r['AP'] for r in sel])} | {step:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = json.loads(args.results.read_text()) if args.results.is_file() else {"rows": []}
    data.update(machine=machine_info(2), command="python " + " ".join(sys.argv))
    for seed in args.seeds:
        for mode in args.modes:
            if any(r["name"] == mode and r["seed"] == seed for r in data["rows"]):
                continue
            data["rows"].append(run_mode(mode, seed, args))
            atomic_write_json(args.results, data)  # every finished row is kept
            print(f"[teacher_cache] seed {seed} {mode} done", flush=True)
    rows = sorted(data["rows"], key=lambda r: (r["seed"], MODES.index(r["name"])))
    text = ("Built-in dataset (standard preset), test split; F-YOLO width 0.25 at 160 px, "
            f"{args.epochs} epochs, unlabeled ratio 0.5, from the demo's YOLOv2 teacher (width 0.375). "
            "Step time: median mmengine iteration time (batch 16, data loading included), 2 threads.\n\n"
            + summary(rows) + "\n" + markdown_table(rows, ["seed", "name", "mAP50", "AP", "train_step_ms", "wall_s"]))
    write_markdown(args.results.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
