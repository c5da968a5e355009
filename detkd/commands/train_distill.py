"""Distil a trained teacher into a student detector (Mehta & Ozturk 2018 and classic KD terms).

Examples:
    python tools/train_distill.py configs/distill/fyolo_synthetic.py --teacher-ckpt work_dirs/teacher/best_coco_AP50_epoch_30.pth
    python tools/train_distill.py configs/distill/fyolo_voc.py --cfg-options data.root=/data/VOC2007 unlabeled.ratio=0.5
    python tools/train_distill.py configs/distill/fyolo_bccd_ultralytics_teacher.py --teacher-ckpt runs/yolov8s/weights/best.pt --trust-teacher
    python tools/train_distill.py configs/distill/fyolo_synthetic_takd.py --work-dir work_dirs/takd --resume
    torchrun --nproc_per_node 2 tools/train_distill.py configs/distill/fyolo_synthetic.py --launcher pytorch

The config is a training config whose `model` is the student, plus `teacher` (checkpoint: a detkd
.pth, an ultralytics .pt/.yaml), `distill` (objectness-scaled terms, FM-NMS, Hinton/logit-L2/noisy
teacher), `unlabeled` (extra images at a ratio), `hints` (FitNets) and `chain` (TAKD assistants).
Every term is logged by name. The work dir receives what tools/train.py writes, for the student;
TAKD assistants train in <work-dir>/assistants/, FitNets stage 1 in <dir>/hint_stage/.
Evaluate and export the student with tools/eval.py and tools/export.py like any detkd checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.config import add_run_arguments, load_config
from detkd.engine.console import set_verbose
from detkd.errors import run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="distillation config (configs/distill/*.py)")
    parser.add_argument("--teacher-ckpt", help="teacher checkpoint (overrides teacher.checkpoint)")
    parser.add_argument("--trust-teacher", action="store_true",
                        help="allow unpickling the teacher file (ultralytics .pt); only for files you trust")
    add_run_arguments(parser, "train.epochs=5 distill.lambda_d=0.5 unlabeled.ratio=1", "continue every unfinished stage from its latest checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_verbose(args.verbose)
    return run_tool(lambda: distill(args), args.debug)


def distill(args: argparse.Namespace) -> int:
    options = dict(args.cfg_options)
    if args.teacher_ckpt:
        options["teacher.checkpoint"] = args.teacher_ckpt
    if args.trust_teacher:
        options["teacher.trust"] = True
    cfg = load_config(args.config, options, args.data)
    from detkd.distill.runner import run_distill  # heavy imports after the argument check

    work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    best = run_distill(cfg, work_dir, resume=args.resume, launcher=args.launcher)
    print(f"student checkpoint: {best}")
    return 0
