#!/usr/bin/env python
"""How fast the F-YOLO student runs with each backbone stem, beside its teacher, on this CPU.

    python benchmarks/student_latency.py --teacher-ckpt benchmarks/subjects/ssd_cpu_w0.5_bccd.pth
        [--sizes 448 512] [--width 0.5] [--threads 2] [--rounds 5]

Variants (F-YOLO builder arguments; weights are seeded random, which does not change a float graph's time):
``darknet`` (the published layout: a 3x3 conv at full resolution, then a 2x2 max-pool), ``min16`` (``min_channels=16``:
the first conv keeps 16 channels instead of 8 at width 0.5), ``conv_stem`` (``stem="conv"``: the first conv at
stride 2 replaces the first max-pool) and ``conv_stem_min16`` (both). Each variant is exported to ONNX (checked by
onnxruntime) and timed in alternation with the teacher's ONNX graph at the teacher's own input size
(:func:`~detkd.engine.benchmark.paired_onnx_latency`: ``--rounds`` rounds of 30 runs, batch 1), so a row's
``speedup`` (teacher ms / student ms, median of the rounds' ratios) comes from one machine state; ``speedup_range``
gives the rounds' lowest and highest ratio. ``gflops``: 2 x multiply-adds at batch 1.

Why: on an AVX-512 CPU ONNX Runtime's blocked-channel convs work in blocks of 16 channels, and the student's
8-channel first map is reordered out of them for its pool; and the full-resolution first conv is one of the costliest
nodes at 512 px. ``--profile`` measures both: each row then keeps its costliest ONNX nodes and their share of the
time (``profile``), listed in the markdown.

Outputs: benchmarks/results/student_latency.{json,md}. A rerun replaces the rows of its variants, sizes and width;
rows timed beside another teacher, with other threads or rounds, or on another CPU are dropped, never mixed.
"""

from __future__ import annotations

import argparse
import collections
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import REPO, RESULTS

import detkd  # noqa: F401  (offline environment first)
from detkd.engine.benchmark import count_flops, count_params, machine_info, paired_onnx_latency
from detkd.engine.results import markdown_table, write_markdown
from detkd.fileio import atomic_write_json

VARIANTS: dict[str, dict[str, Any]] = {
    "darknet": {},
    "min16": {"min_channels": 16},
    "conv_stem": {"stem": "conv"},
    "conv_stem_min16": {"stem": "conv", "min_channels": 16},
}
COLUMNS = ["variant", "imgsz", "width", "params", "gflops", "threads", "student_ms", "teacher_ms", "speedup",
           "speedup_range"]


def profile_shares(onnx_path: Path, image: Any, threads: int, runs: int = 30, warmup: int = 5,
                   top: int = 8) -> list[tuple[str, float]]:
    """The ``top`` ONNX Runtime nodes by share of ``runs`` runs' kernel time (after ``warmup`` runs, whose events
    are dropped: each node's first ``warmup`` occurrences): ``[(node, fraction), ...]``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.intra_op_num_threads = threads
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, {"images": image.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
    seen: collections.Counter[str] = collections.Counter()
    spent: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"].removesuffix("_kernel_time")
            seen[node] += 1
            if seen[node] > warmup:
                spent[node] += event["dur"]
    total = sum(spent.values()) or 1
    return [(name, dur / total) for name, dur in spent.most_common(top)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-ckpt", type=Path, required=True, help="the detkd teacher checkpoint to time beside")
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 512], help="student input sizes")
    parser.add_argument("--width", type=float, default=0.5, help="student width multiplier")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="also record each variant's costliest ONNX nodes (row 'profile', and a list in the markdown)")
    args = parser.parse_args()

    import torch

    from detkd.export.onnx import export_onnx
    from detkd.models.factory import build_model
    from detkd.engine.checkpoint import checkpoint_model_label, load_detector

    teacher = load_detector(args.teacher_ckpt)
    teacher_label = checkpoint_model_label(args.teacher_ckpt, file_hash=True)
    class_names = list(teacher.class_names)
    generator = torch.Generator().manual_seed(0)
    results_path = RESULTS / "student_latency.json"
    previous = json.loads(results_path.read_text()) if results_path.is_file() else {}
    old, old_machine = previous.get("rows", []), previous.get("machine", {})
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        teacher_onnx = Path(work) / "teacher.onnx"
        teacher_image = torch.rand(1, 3, teacher.imgsz, teacher.imgsz, generator=generator)
        export_onnx(teacher, teacher_onnx, teacher.imgsz)
        for size in args.sizes:
            image = torch.rand(1, 3, size, size, generator=generator)
            for variant in args.variants:
                torch.manual_seed(0)
                model = build_model("fyolo", class_names=class_names, imgsz=size, width=args.width,
                                    **VARIANTS[variant]).eval()
                path = Path(work) / f"{variant}_{size}.onnx"
                export_onnx(model, path, size)
                pair = paired_onnx_latency((path, image), (teacher_onnx, teacher_image), args.threads, rounds=args.rounds)
                row = {"variant": variant, "imgsz": size, "width": args.width, "options": VARIANTS[variant],
                       "teacher": teacher_label, "teacher_imgsz": teacher.imgsz, "rounds": args.rounds,
                       "params": count_params(model), "gflops": count_flops(model, size) / 1e9, "threads": args.threads,
                       "student_ms": pair["first_ms"], "teacher_ms": pair["second_ms"], "speedup": pair["ratio"],
                       "speedups": pair["ratios"],
                       "speedup_range": f"{min(pair['ratios']):.2f}-{max(pair['ratios']):.2f}"}
                rows.append(row)
                print(f"{variant} {size}px: {row['student_ms']:.2f} ms beside the teacher's {row['teacher_ms']:.2f} ms, "
                      f"{row['speedup']:.2f}x ({row['speedup_range']})", flush=True)
                if args.profile:
                    row["profile"] = [[name, share] for name, share in profile_shares(path, image, args.threads)]
                    for name, share in row["profile"]:
                        print(f"    {share * 100:5.1f} %  {name}", flush=True)
    machine = machine_info(args.threads)
    if old and old_machine.get("cpu") != machine["cpu"]:
        old = []  # timings of another CPU: never mixed with this one's
    keys = {(r["variant"], r["imgsz"], r["width"]) for r in rows}
    same_setup = [r for r in old if (r.get("teacher"), r.get("threads"), r.get("rounds")) == (teacher_label, args.threads, args.rounds)]
    rows = [r for r in same_setup if (r["variant"], r["imgsz"], r["width"]) not in keys] + rows
    order = {name: i for i, name in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (r["width"], r["imgsz"], order.get(r["variant"], len(order))))
    command = shlex.join(["python", "benchmarks/student_latency.py", *sys.argv[1:]])
    atomic_write_json(results_path, {"machine": machine, "command": command, "teacher": teacher_label, "rows": rows})
    note = (f"F-YOLO student variants timed in alternation with the teacher `{teacher_label}` "
            f"({teacher.imgsz} px): ONNX Runtime, batch 1, median over {args.rounds} rounds of each round's median of "
            f"30 runs, {args.threads} threads, {machine['cpu']}, onnxruntime {machine.get('onnxruntime', '?')}. "
            "`speedup`: teacher ms / student ms (median of the rounds' ratios; `speedup_range` their lowest and "
            "highest). Seeded random weights.\n\n")
    profiles = [f"- **{r['variant']}, {r['imgsz']} px**: " + ", ".join(f"{name} {100 * share:.1f} %" for name, share in r["profile"])
                for r in rows if r.get("profile")]
    shares = ("\n**Where the time goes** (`--profile`: ONNX Runtime's per-node kernel time over 30 runs after 5 warm-up "
              "runs, the costliest nodes, as a share of all nodes' time; `_nchwc` nodes run on blocked channels (16 per block on AVX-512), "
              "`ReorderOutput` converts a blocked map back to plain NCHW):\n\n" + "\n".join(profiles) + "\n") if profiles else ""
    write_markdown(RESULTS / "student_latency.md", note + markdown_table(rows, COLUMNS) + shares)
    return 0


if __name__ == "__main__":
    sys.exit(main())
