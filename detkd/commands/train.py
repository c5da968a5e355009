"""Train a detector from a config on mmengine's Runner.

Examples:
    python tools/train.py configs/train/fyolo_synthetic.py
    python tools/train.py configs/train/yolov2_voc.py --cfg-options data.root=/data/VOC2007 train.epochs=50
    python tools/train.py configs/train/fyolo_synthetic.py --work-dir work_dirs/fyolo --resume
    torchrun --nproc_per_node 2 tools/train.py configs/train/fyolo_synthetic.py --launcher pytorch

The work dir receives the resolved config, logs (text, JSON scalars, TensorBoard), checkpoints
(epoch_N.pth, latest via `last_checkpoint`, best_coco_AP50_epoch_N.pth; all written atomically),
and the last validation's metrics.json and dets.json.
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
    parser.add_argument("config", help="training config file (configs/train/*.py)")
    add_run_arguments(parser, "train.epochs=5 data.root=/data/VOC2007", "continue from the latest checkpoint in the work dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_verbose(args.verbose)
    return run_tool(lambda: train(args), args.debug)


def train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.cfg_options, args.data)
    from detkd.engine.runner import build_runner  # heavy imports after the argument check

    work_dir = args.work_dir or str(Path("work_dirs") / Path(args.config).stem)
    build_runner(cfg, work_dir, resume=args.resume, launcher=args.launcher).train()
    return 0
