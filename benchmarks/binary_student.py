#!/usr/bin/env python
"""Binarized vs float F-YOLO student: accuracy, size and latency, trained on labels and with distillation.

    python benchmarks/binary_student.py --dataset bccd --teacher-ckpt SSD.pth [--epochs 20]
        [--float-labels-ckpt CKPT] [--float-kd-ckpt CKPT] [--only METHOD ...] [--policy all|speed] [--threads 2]

Rows (``method``): ``float_labels``, ``binary_labels`` (tools/train.py), ``float_kd``, ``binary_kd``
(tools/train_distill.py from the float teacher: objectness scaling + FM-NMS, no unlabeled images), and
``int8``: the ``float_labels`` student quantized by ONNX Runtime's static quantization (calibrated on 200
training images), evaluated and timed through ONNX Runtime. ``deployed_latency_ms`` is each row's latency
in the runtime it deploys to: ONNX Runtime for float and INT8 rows, OpenVINO IR with the binary convs on
BinaryConvolution for binarized rows (``deployed_runtime``). ``--policy`` picks which convs the binary
rows binarize (``model.binary.policy``). The
binary student is the same F-YOLO (width 0.5, 320 px on BCCD) with ``binary=dict(mode="xnor",
keep_1x1=True)``: every 3x3 conv but the first binarized. Float rows may reuse checkpoints trained with
the same config and epochs (``--float-*-ckpt``, e.g. distill_ablation's ``labels_only`` and
``kd_objscale_fmnms``). Columns: mAP50/AP on val; ``params``; ``weights_kb`` (float32 for float rows,
1-bit packed binary convs + float32 rest for binary rows, exact bytes; ``binary_convs_ratio``: the binary
convs' float32 bytes over their packed bytes, alpha included); ``torch_latency_ms`` (PyTorch
eager; binary rows run the float simulation there) and ``kernel_latency_ms`` (binary rows on detkd's
XNOR/popcount kernel via ``pack_model``); ``onnx_latency_ms`` (ONNX Runtime; a binary model exports
its float simulation, which is slower than float: shown as measured). Resumable like the other
benchmarks. Outputs: benchmarks/results/binary_student.{json,md}.
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
from detkd.engine.benchmark import evaluate_and_time, machine_info, time_fn
from detkd.engine.checkpoint import load_detector
from detkd.engine.run_state import RunState, best_checkpoint
from detkd.engine.results import ResultsFile, markdown_table, write_markdown

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "binary_student"
METHODS = ["float_labels", "float_kd", "int8", "binary_labels", "binary_kd"]
BINARY = ["model.binary.mode=xnor", "model.binary.keep_1x1=True"]
DATASETS = {
    "bccd": dict(train="fyolo_bccd", distill="fyolo_bccd", data=str(REPO.parent / "shared" / "data" / "bccd")),
    "synthetic": dict(train="fyolo_synthetic", distill="fyolo_synthetic", data=None),
}
COLUMNS = ["method", "dataset", "epochs", "imgsz", "params", "weights_kb", "binary_convs_ratio", "mAP50", "AP",
           "torch_latency_ms", "kernel_latency_ms", "onnx_latency_ms", "deployed_runtime", "deployed_latency_ms"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), default="bccd")
    parser.add_argument("--data", help="dataset root (default: BCCD's shared copy / the built-in one in the work dir)")
    parser.add_argument("--teacher-ckpt", required=True, help="the float teacher of the *_kd rows")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--imgsz", type=int, help="input size (default: the config's)")
    parser.add_argument("--width", type=float, help="student width multiplier (default: the config's, 0.5)")
    parser.add_argument("--float-labels-ckpt", help="reuse a float labels-only student (same config and epochs)")
    parser.add_argument("--float-kd-ckpt", help="reuse a float distilled student (same config and epochs)")
    parser.add_argument("--only", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--policy", choices=["all", "speed"], default="all", help="model.binary.policy of the binary rows")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def data_root(args: argparse.Namespace) -> str:
    return args.data or DATASETS[args.dataset]["data"] or str(WORK / args.dataset / "data")


def options(args: argparse.Namespace, method: str) -> list[str]:
    binary = [*BINARY, f"model.binary.policy={args.policy}"] if method.startswith("binary") else []
    opts = [f"data.root={data_root(args)}", f"train.epochs={args.epochs}", *binary]
    if method.endswith("_kd"):
        opts += ["unlabeled.ratio=0.0", "distill.scale_by_objectness=True", "distill.fm_nms.enabled=True"]
    return opts + ([f"imgsz={args.imgsz}"] if args.imgsz else []) + ([f"model.width={args.width}"] if args.width else [])


def train(method: str, args: argparse.Namespace) -> Path:
    if method == "int8":  # the float labels-only student, quantized when it is measured
        method = "float_labels"
    given = {"float_labels": args.float_labels_ckpt, "float_kd": args.float_kd_ckpt}.get(method)
    if given:
        return Path(given)
    spec, work = DATASETS[args.dataset], WORK / args.dataset / method
    if method.endswith("_kd"):
        cmd = [sys.executable, "tools/train_distill.py", f"configs/distill/{spec['distill']}.py", "--teacher-ckpt", args.teacher_ckpt]
    else:
        cmd = [sys.executable, "tools/train.py", f"configs/train/{spec['train']}.py"]
    cmd += ["--work-dir", str(work), "--cfg-options", *options(args, method)]
    if not RunState(work).finished():
        cmd += ["--resume"]  # continue an interrupted run (a new folder starts fresh)
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return best_checkpoint(work)


def measure(method: str, ckpt: Path, args: argparse.Namespace) -> dict:
    import torch

    from detkd.export.onnx import sample_images
    from detkd.binary.packing import pack_model, packed_sizes

    spec = DATASETS[args.dataset]
    cfg = load_config(REPO / "configs" / "train" / f"{spec['train']}.py", {"data.root": data_root(args)})
    val = read_split(dict(cfg.data), "val")
    detector = load_detector(ckpt).eval()
    if method == "int8":
        from detkd.engine.benchmark import evaluate_and_time_int8

        row = evaluate_and_time_int8(f"{args.dataset}_int8", detector, val, WORK / "onnx", args.threads, args.dataset,
                                     read_split(dict(cfg.data), "train"), 200)
        row.update(deployed_runtime="onnxruntime", deployed_latency_ms=row["onnx_latency_ms"], method=method, epochs=args.epochs,
                   checkpoint=str(ckpt), split="val", teacher=None)
        return row
    row = evaluate_and_time(f"{args.dataset}_{method}", detector, val, WORK / "onnx", args.threads, dataset=args.dataset)
    sizes = packed_sizes(detector)
    binary = method.startswith("binary")
    row["weights_kb"] = ((sizes["binary_packed"] if binary else sizes["binary_float32"]) + sizes["other"]) / 1024
    if binary:  # the binary convs alone, exact bytes: float32 as trained vs 1 bit per weight (+ alpha per filter)
        row.update(binary_convs_float32_bytes=sizes["binary_float32"], binary_convs_packed_bytes=sizes["binary_packed"],
                   binary_convs_ratio=sizes["binary_float32"] / sizes["binary_packed"])
    if binary:
        image = sample_images(val, int(detector.imgsz), count=1)[:1]
        packed = pack_model(detector)
        with torch.no_grad():
            row["kernel_latency_ms"] = time_fn(lambda: packed(image), 5, 30).median_ms
    row.pop("onnx_outputs", None)
    row.update(method=method, epochs=args.epochs, checkpoint=str(ckpt), split="val",
               teacher=args.teacher_ckpt if method.endswith("_kd") else None)
    return row


def main() -> int:
    args = parse_args()
    command = "python benchmarks/binary_student.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "binary_student.json", machine_info(args.threads), command.strip())
    todo = [m for m in args.only if not results.has(method=m, dataset=args.dataset)]
    checkpoints = {m: train(m, args) for m in todo}  # phase 1: train; phase 2: measure in one machine state
    for method, ckpt in checkpoints.items():
        row = measure(method, ckpt, args)
        results.add({**row, "command": command}, key=("method", "dataset"))
        print(f"{row['name']}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f} onnx {row['onnx_latency_ms']:.2f} ms "
              f"kernel {row.get('kernel_latency_ms', float('nan')):.2f} ms", flush=True)
    m = results.data["machine"]
    parts = []
    for dataset in DATASETS:
        rows = [r for name in METHODS for r in results.rows if r["method"] == name and r["dataset"] == dataset]
        if rows:
            parts.append(f"**{dataset}** (val). Batch 1, median of 30 runs, {m['threads']} threads, {m['cpu']}.\n\n"
                         + markdown_table(rows, COLUMNS))
    write_markdown(RESULTS / "binary_student.md", "\n\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
