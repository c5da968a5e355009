#!/usr/bin/env python
"""Whole-model latency of the deployed student: float, INT8 and binarized, each in its runtime.

    python benchmarks/binary_deploy.py [--width 0.5] [--imgsz 320] [--threads 2] [--repeats 5] [--iters 50]

The BCCD student's architecture (F-YOLO, 3 classes) with seeded random weights (latency does not depend
on the weights' values; accuracy is measured by benchmarks/binary_student.py), batch 1, one image:

- ``float_onnxruntime``: the float student in ONNX Runtime (what tools/benchmark.py times);
- ``float_openvino``: the same ONNX file in OpenVINO (separates "OpenVINO" from "binary");
- ``int8_onnxruntime``: ONNX Runtime static quantization of the float student (QDQ, per-channel int8
  weights, calibrated on 16 random images: latency only);
- ``binary_all_openvino``: every conv but the first and the prediction conv binarized
  (``model.binary.policy="all"``), deployed as OpenVINO IR on BinaryConvolution (tools/export.py --binary);
- ``binary_speed_openvino``: only the convs the layer policy allows (``policy="speed"``);
- ``binary_all_eager``: the ``all`` model with its binary convs on detkd's packed C++ kernel, in
  PyTorch eager (the previous deployment route).

Each row is timed ``--repeats`` times (a fresh session each, ``--iters`` runs after warm-up, median)
in one process, one row after the other; the table gives the median over repeats and the min-max
spread, and every binarized row's speedup against ``float_onnxruntime``. Outputs:
benchmarks/results/binary_deploy.{json,md}. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from common import REPO, RESULTS

import detkd  # noqa: F401  (offline environment first)
from detkd.engine.benchmark import machine_info, time_fn
from detkd.engine.results import ResultsFile, markdown_table, write_markdown

ROWS = ["float_onnxruntime", "float_openvino", "int8_onnxruntime", "binary_all_openvino", "binary_speed_openvino", "binary_all_eager"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=50)
    return parser.parse_args()


def build(binary: dict[str, Any] | None, args: argparse.Namespace) -> torch.nn.Module:
    from detkd.models.factory import build_model

    torch.manual_seed(0)
    return build_model("fyolo", class_names=["Platelets", "RBC", "WBC"], imgsz=args.imgsz, width=args.width,
                       **({"binary": binary} if binary else {})).eval()


def timers(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Per row, a function that opens a fresh session and returns one timed median (ms)."""
    from detkd.binary.packing import pack_model
    from detkd.export.int8 import quantize_int8
    from detkd.export.onnx import export_onnx, ort_session
    from detkd.export.openvino import compile_ir, export_binary_ir

    image = torch.rand(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(1))
    feed = image.numpy()
    float_model = build(None, args)
    export_onnx(float_model, work / "float.onnx", check_images=image)
    quantize_int8(work / "float.onnx", work / "int8.onnx", torch.rand(16, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(2)))
    binary_all, binary_speed = build({"mode": "xnor", "policy": "all"}, args), build({"mode": "xnor", "policy": "speed"}, args)
    export_binary_ir(binary_all, work / "all.xml", check_images=image)
    export_binary_ir(binary_speed, work / "speed.xml", check_images=image)
    eager = pack_model(binary_all)

    def ort(path: Path) -> float:
        session = ort_session(path, args.threads)
        return time_fn(lambda: session.run(None, {"images": feed}), 5, args.iters).median_ms

    def openvino(path: Path) -> float:
        compiled = compile_ir(path, args.threads)
        return time_fn(lambda: compiled(feed), 5, args.iters).median_ms

    def torch_eager() -> float:
        torch.set_num_threads(args.threads)
        with torch.no_grad():
            return time_fn(lambda: eager(image), 5, args.iters).median_ms

    counts = {"binary_all_openvino": binary_all, "binary_speed_openvino": binary_speed, "binary_all_eager": binary_all}
    return {
        "timers": {"float_onnxruntime": lambda: ort(work / "float.onnx"), "float_openvino": lambda: openvino(work / "float.onnx"),
                   "int8_onnxruntime": lambda: ort(work / "int8.onnx"), "binary_all_openvino": lambda: openvino(work / "all.xml"),
                   "binary_speed_openvino": lambda: openvino(work / "speed.xml"), "binary_all_eager": torch_eager},
        "binary_convs": {k: sum(type(m).__name__ == "BinaryConv2d" for m in v.modules()) for k, v in counts.items()},
        "sizes_mb": {"float_onnxruntime": (work / "float.onnx").stat().st_size / 2**20, "int8_onnxruntime": (work / "int8.onnx").stat().st_size / 2**20,
                     "binary_all_openvino": sum((work / f"all.{e}").stat().st_size for e in ("xml", "bin")) / 2**20,
                     "binary_speed_openvino": sum((work / f"speed.{e}").stat().st_size for e in ("xml", "bin")) / 2**20},
    }


def main() -> int:
    args = parse_args()
    command = "python benchmarks/binary_deploy.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "binary_deploy.json", machine_info(args.threads), command.strip(), fresh=True)
    with tempfile.TemporaryDirectory() as folder:
        setup = timers(Path(folder), args)
        times: dict[str, list[float]] = {row: [] for row in ROWS}
        for repeat in range(args.repeats):  # interleaved: every row sees the same machine state
            for row in ROWS:
                times[row].append(setup["timers"][row]())
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{r} {times[r][-1]:.2f}" for r in ROWS), flush=True)
    base = statistics.median(times["float_onnxruntime"])
    for row in ROWS:
        median = statistics.median(times[row])
        results.add({"name": row, "dataset": "latency only (random weights)", "imgsz": args.imgsz, "width": args.width,
                     "threads": args.threads, "params": None, "flops": None, "mAP50": None, "AP": None, "onnx_latency_ms": median,
                     "deployed_latency_ms": median, "min_ms": min(times[row]), "max_ms": max(times[row]), "repeats": times[row],
                     "speedup_vs_float_ort": base / median, "binary_convs": setup["binary_convs"].get(row, 0),
                     "size_mb": setup["sizes_mb"].get(row), "command": command.strip()})
    m = results.data["machine"]
    text = (f"F-YOLO width {args.width} at {args.imgsz} px (the BCCD student's architecture), batch 1, {args.threads} threads, "
            f"{m['cpu']}, onnxruntime {m['onnxruntime']}; median of {args.iters} runs per session, {args.repeats} sessions per row "
            "(interleaved); `deployed_latency_ms` is the median over sessions, `min_ms`-`max_ms` their spread.\n\n"
            + markdown_table(results.rows, ["name", "binary_convs", "deployed_latency_ms", "min_ms", "max_ms", "speedup_vs_float_ort", "size_mb"]))
    write_markdown(RESULTS / "binary_deploy.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
