#!/usr/bin/env python
"""How good are a teacher's targets once expressed in the student's output space?

    python benchmarks/diagnostics/diagnose_teacher_targets.py CFG TEACHER_CKPT [--name NAME] [--data ROOT] [--split val] [--trust]
        [--cfg-options KEY=VALUE ...]

A student that imitated the teacher's map perfectly would output exactly the targets the distiller
gives it. This script builds those targets on every image of the split (teacher adapter -> optional
FM-NMS), writes them as raw student outputs (objectness and class logits from the probabilities,
box offsets from the encoded box), decodes them with the student's own decoder and evaluates them:
the ceiling of output-space distillation for this teacher, grid and anchors. It also evaluates the
teacher on its own, so the loss from projection (another head onto the student's coarser grid) and
from FM-NMS is visible. Rows: ``teacher_own_decode``, ``targets_no_fmnms``, ``targets_fmnms_all``
(FM-NMS with mode ``all``: suppressed candidates lose their objectness too; modes ``class`` and
``class_box`` leave objectness and so decode like ``targets_no_fmnms`` in the score ranking), each
with mAP50 / AP overall and per class (``AP50_<class>``, ``AP_<class>``): which classes the projection
onto the student's grid loses.

Accuracy only (no timing). Rows are keyed by teacher file (name and hash), config, student input size and
split, and resumable. Outputs: benchmarks/results/diagnose_teacher_targets.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import detkd  # noqa: F401  (offline environment first)
from detkd.config import DictAction, load_config
from detkd.engine.benchmark import machine_info
from detkd.engine.results import ResultsFile, markdown_table, relative_path, write_markdown
from detkd.fileio import file_sha256
from detkd.data.sources import read_split
from detkd.distill.runner import load_teacher
from detkd.distill.teachers import build_teacher_adapter
from detkd.engine.evaluate import evaluate_model
from detkd.engine.runner import build_detector
from detkd.ops.fm_nms import fm_nms_targets

EPS = 1e-6
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


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


def target_rows(cfg: Any, split_name: str) -> list[dict[str, Any]]:
    """The three rows of the module docstring for the distillation config ``cfg`` (teacher and data set in it)."""
    torch.manual_seed(0)
    train, split = read_split(dict(cfg.data), "train"), read_split(dict(cfg.data), split_name)
    student = build_detector(dict(cfg.model), train.class_names, int(cfg.imgsz), train)  # k-means anchors as in training
    teacher = load_teacher(dict(cfg.teacher), train.class_names, int(cfg.imgsz))
    adapter = build_teacher_adapter(teacher, student, cfg.teacher.get("imgsz"), cfg.teacher.get("class_map"))
    grid = f"{int(cfg.imgsz) // student.stride}x{int(cfg.imgsz) // student.stride}"
    rows = []
    with torch.no_grad():
        for name, model in (("teacher_own_decode", teacher), ("targets_no_fmnms", TargetsAsOutputs(student, adapter, None)),
                            ("targets_fmnms_all", TargetsAsOutputs(student, adapter, "all"))):
            metrics, _ = evaluate_model(model, split, progress=False)
            row: dict[str, Any] = {"targets": name, "grid": grid, "anchors": len(student.anchors),
                                   "mAP50": float(metrics["AP50"]), "AP": float(metrics["AP"])}
            for cls, values in metrics["per_class"].items():
                row[f"AP50_{cls}"], row[f"AP_{cls}"] = float(values["AP50"]), float(values["AP"])
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the distillation config (student model, data, teacher mapping)")
    parser.add_argument("teacher", type=Path, help="teacher checkpoint")
    parser.add_argument("--name", help="the teacher's name in the table (default: its file name and hash)")
    parser.add_argument("--data", help="data.root override")
    parser.add_argument("--split", default="val")
    parser.add_argument("--trust", action="store_true", help="allow unpickling the teacher file")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE",
                        help="more config overrides (e.g. teacher.imgsz=320)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)  # tests write elsewhere
    args = parser.parse_args()
    options: dict[str, Any] = {"teacher.checkpoint": str(args.teacher), "teacher.trust": args.trust}
    if args.data:
        options["data.root"] = args.data
    options.update(args.cfg_options)
    cfg = load_config(args.config, options)
    label = f"{args.teacher.stem}@{file_sha256(args.teacher)[:8]}"
    command = "python benchmarks/diagnostics/diagnose_teacher_targets.py " + " ".join(sys.argv[1:])
    results = ResultsFile(args.results / "diagnose_teacher_targets.json", machine_info(1), command)
    torch.set_num_threads(1)  # accuracy only: leave the other core to a training run
    key = dict(teacher=label, config=relative_path(Path(args.config), REPO), imgsz=int(cfg.imgsz), split=args.split)
    if not results.has(**key):
        for row in target_rows(cfg, args.split):
            results.add({"name": f"{args.name or label} {row['targets']}", **key, "dataset": Path(str(cfg.data.root)).name,
                         "teacher_name": args.name or label, "params": None, "flops": None, "onnx_latency_ms": None, **row},
                        key=("teacher", "config", "imgsz", "split", "targets"))
    classes = sorted({k[len("AP50_"):] for r in results.rows for k in r if k.startswith("AP50_")})
    columns = ["teacher_name", "targets", "split", "imgsz", "grid", "anchors", "mAP50", "AP",
               *[f"AP50_{c}" for c in classes], *[f"AP_{c}" for c in classes]]
    text = ("Each teacher's distillation targets decoded as if they were the student's outputs (the ceiling of output-space "
            "distillation on the student's grid and anchors), beside the teacher's own decode; per class mAP50 and AP.\n\n"
            + markdown_table(results.rows, columns) + "\n")
    write_markdown(args.results / "diagnose_teacher_targets.md", text)
    for row in results.rows:
        if all(row.get(k) == v for k, v in key.items()):
            print(f"{row['name']}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
