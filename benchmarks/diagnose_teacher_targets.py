#!/usr/bin/env python
"""How good are a teacher's targets once expressed in the student's output space?

    python benchmarks/diagnose_teacher_targets.py CFG TEACHER_CKPT [--data ROOT] [--split val] [--trust]

A student that imitated the teacher's map perfectly would output exactly the targets the distiller
gives it. This script builds those targets on every image of the split (teacher adapter -> optional
FM-NMS), writes them as raw student outputs (objectness and class logits from the probabilities,
box offsets from the encoded box), decodes them with the student's own decoder and evaluates them:
the ceiling of output-space distillation for this teacher, grid and anchors. It also evaluates the
teacher on its own, so the loss from projection (another head onto the student's coarser grid) and
from FM-NMS is visible. Rows: ``teacher_own_decode``, ``targets_no_fmnms``, ``targets_fmnms_all``
(FM-NMS with mode ``all``: suppressed candidates lose their objectness too; modes ``class`` and
``class_box`` leave objectness and so decode like ``targets_no_fmnms`` in the score ranking).

Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn as nn

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.sources import read_split
from detkd.distill.runner import load_teacher
from detkd.distill.teachers import build_teacher_adapter
from detkd.engine.evaluate import evaluate_model
from detkd.engine.runner import build_detector
from detkd.ops.fm_nms import fm_nms_targets

EPS = 1e-6


class TargetsAsOutputs(nn.Module):
    """A pseudo-detector whose raw outputs are the distillation targets (student layout)."""

    def __init__(self, student: nn.Module, adapter: nn.Module, fm_mode: str | None) -> None:
        super().__init__()
        self.student, self.adapter, self.fm_mode = student, adapter, fm_mode
        self.imgsz, self.class_names = student.imgsz, student.class_names
        self.dummy = nn.Parameter(torch.zeros(()))  # evaluate_model reads the device from a parameter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tmap = self.adapter(images)
        obj = tmap.obj
        if self.fm_mode is not None:
            obj = fm_nms_targets(tmap, 3, self.fm_mode).obj  # type: ignore[arg-type]
        offset = tmap.box[..., :2].clamp(EPS, 1 - EPS)
        raw_box = torch.cat((torch.logit(offset), tmap.box[..., 2:]), dim=-1)
        obj_logit = torch.logit(obj.clamp(EPS, 1 - EPS)).unsqueeze(-1)
        cls_logits = torch.log(tmap.cls.clamp(min=EPS))
        return torch.cat((raw_box, obj_logit, cls_logits), dim=-1)

    def decode(self, outputs, cfg=None):  # noqa: ANN001, ANN201
        return self.student.decode(outputs, cfg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the distillation config (student model, data, teacher mapping)")
    parser.add_argument("teacher", help="teacher checkpoint")
    parser.add_argument("--data", help="data.root override")
    parser.add_argument("--split", default="val")
    parser.add_argument("--trust", action="store_true", help="allow unpickling the teacher file")
    args = parser.parse_args()
    options = {"teacher.checkpoint": args.teacher, "teacher.trust": args.trust}
    if args.data:
        options["data.root"] = args.data
    cfg = load_config(args.config, options)
    torch.manual_seed(0)
    train, split = read_split(dict(cfg.data), "train"), read_split(dict(cfg.data), args.split)
    student = build_detector(dict(cfg.model), train.class_names, int(cfg.imgsz), train)  # k-means anchors as in training
    teacher = load_teacher(dict(cfg.teacher), train.class_names, int(cfg.imgsz))
    adapter = build_teacher_adapter(teacher, student, cfg.teacher.get("imgsz"), cfg.teacher.get("class_map"))
    rows = []
    with torch.no_grad():
        metrics, _ = evaluate_model(teacher, split, progress=False)
        rows.append(("teacher_own_decode", metrics))
        for name, mode in (("targets_no_fmnms", None), ("targets_fmnms_all", "all")):
            metrics, _ = evaluate_model(TargetsAsOutputs(student, adapter, mode), split, progress=False)
            rows.append((name, metrics))
    print(f"{args.split} split, student grid {cfg.imgsz // student.stride}x{cfg.imgsz // student.stride}, "
          f"{len(student.anchors)} anchors\n")
    print("| targets | mAP50 | AP |\n|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m['AP50']:.3f} | {m['AP']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
