#!/usr/bin/env python
"""Binarized vs float vs INT8 F-YOLO student: accuracy, size and deployed latency, per seed.

    python benchmarks/binary_student.py --dataset bccd --teacher-ckpt SSD.pth [--epochs 30] [--seeds 0 1 2]
        [--policy speed|all] [--float-from DIR] [--only METHOD ...] [--threads 2]

Rows (``method``), each trained once per ``--seeds`` value (``train.seed``): ``float_labels`` and
``binary_labels`` (tools/train.py); ``float_kd`` and ``binary_kd`` (tools/train_distill.py from the float
teacher with the full recipe of the distillation ablation's ``kd_full_unlabeled``: objectness scaling,
FM-NMS, the dataset's unlabeled images, teacher cache); ``int8``: that seed's ``float_labels`` student
quantized by ONNX Runtime's static quantization (calibrated on 200 training images), evaluated and timed
through ONNX Runtime. Binary rows binarize the convs ``--policy`` picks (``model.binary.policy``; ``speed``,
the default, keeps the layers where a binary conv loses in float) with ``binary=dict(mode="xnor",
keep_1x1=True)``. ``--float-from DIR`` reuses the distillation ablation's float students trained with the
same config, epochs and seeds (``DIR/seed_<s>/labels_only`` and ``DIR/seed_<s>/kd_full_unlabeled``).

Columns: mAP50/AP on val; ``weights_kb`` (float32 for float rows; 1-bit packed binary convs + float32 rest
for binary rows, exact bytes); ``binary_convs_ratio`` (the binary convs' float32 bytes over their packed
bytes, alpha included); ``onnx_latency_ms`` (ONNX Runtime; a binary model exports its float simulation);
``deployed_latency_ms`` in the runtime each row deploys to (``deployed_runtime``: ONNX Runtime for float and
INT8, OpenVINO IR with the binary convs on ``BinaryConvolution`` for binary rows); ``kernel_latency_ms``
(binary rows on detkd's XNOR kernel in PyTorch eager); ``train_step_ms`` and ``val_curve`` from the run's
logs. The report gives mean ± sd over seeds, the issue's targets from the means, and a plot against
deployed FPS. Rows of an earlier protocol keep a named ``series``. Resumable (a finished row is skipped;
an interrupted training run resumes); ``--remeasure`` measures the finished rows again without training
(after a run that shared the CPU with something else). Outputs: benchmarks/results/binary_student.{json,md,png}.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import DATA_ROOTS, REPO, RESULTS

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.sources import read_split
from detkd.engine.benchmark import evaluate_and_time, machine_info, time_fn, train_step_ms, validation_curve
from detkd.engine.checkpoint import load_detector
from detkd.engine.run_state import RunState, best_checkpoint
from detkd.engine.results import (ResultsFile, last_validation_gain, markdown_table, mean_sd, plot_map_vs_fps, seed_summary,
                                  relative_path, write_markdown)

WORK = REPO / "benchmarks" / "work" / "binary_student"
METHODS = ["float_labels", "float_kd", "int8", "binary_labels", "binary_kd"]
BINARY = ["model.binary.mode=xnor", "model.binary.keep_1x1=True"]
KD = ["distill.scale_by_objectness=True", "distill.fm_nms.enabled=True", "teacher.cache=True"]  # + the dataset's unlabeled
DATASETS = {
    "bccd": dict(train="fyolo_bccd", distill="fyolo_bccd", unlabeled=[],  # no images beyond its splits
                 data=str(DATA_ROOTS["bccd"])),
    "synthetic": dict(train="fyolo_synthetic", distill="fyolo_synthetic", unlabeled=["unlabeled.ratio=0.5"], data=None),
}
FLOAT_FROM = {"float_labels": "labels_only", "float_kd": "kd_full_unlabeled"}  # the distillation ablation's rows
KEY = ("method", "dataset", "seed", "epochs", "policy", "series")  # one row per training run
# ``series``: None for the current protocol; rows kept from an earlier one name it and get their own table.
COLUMNS = ["method", "seed", "epochs", "policy", "params", "weights_kb", "binary_convs_ratio", "mAP50", "AP",
           "onnx_latency_ms", "deployed_runtime", "deployed_latency_ms", "kernel_latency_ms", "train_step_ms"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=list(DATASETS), default="bccd")
    parser.add_argument("--data", help="dataset root (default: BCCD's shared copy / the built-in one in the work dir)")
    parser.add_argument("--teacher-ckpt", help="the float teacher of the *_kd rows (needed when one is trained)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--imgsz", type=int, help="input size (default: the config's)")
    parser.add_argument("--width", type=float, help="student width multiplier (default: the config's, 0.5)")
    parser.add_argument("--float-from", help="a distillation-ablation folder with seed_<s>/labels_only and "
                        "seed_<s>/kd_full_unlabeled of the same config and epochs: reuse those float students")
    parser.add_argument("--only", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--policy", choices=["all", "speed"], default="speed", help="model.binary.policy of the binary rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the results file")
    parser.add_argument("--remeasure", action="store_true", help="measure the finished rows again (accuracy, sizes, "
                        "latencies) without training, e.g. on a quiet machine after a run that shared the CPU")
    return parser.parse_args()


def data_root(args: argparse.Namespace) -> str:
    return args.data or DATASETS[args.dataset]["data"] or str(WORK / args.dataset / "data")


def options(args: argparse.Namespace, method: str, seed: int) -> list[str]:
    binary = [*BINARY, f"model.binary.policy={args.policy}"] if method.startswith("binary") else []
    opts = [f"data.root={data_root(args)}", f"train.epochs={args.epochs}", f"train.seed={seed}", *binary]
    if method.endswith("_kd"):
        opts += [*KD, *DATASETS[args.dataset]["unlabeled"]]
    return opts + ([f"imgsz={args.imgsz}"] if args.imgsz else []) + ([f"model.width={args.width}"] if args.width else [])


def work_dir(method: str, seed: int, args: argparse.Namespace) -> Path:
    if args.float_from and method in FLOAT_FROM:
        return Path(args.float_from) / f"seed_{seed}" / FLOAT_FROM[method]
    policy = f"_{args.policy}" if method.startswith("binary") else ""
    return WORK / args.dataset / f"epochs_{args.epochs}" / f"seed_{seed}" / f"{method}{policy}"


def train(method: str, seed: int, args: argparse.Namespace) -> Path:
    """Train (or resume) one row's model; returns its best checkpoint."""
    if method == "int8":  # the float labels-only student, quantized when it is measured
        method = "float_labels"
    work = work_dir(method, seed, args)
    if args.float_from and method in FLOAT_FROM:
        if not RunState(work).finished():
            raise SystemExit(f"{work}: --float-from needs a finished run there")
        return best_checkpoint(work)
    spec = DATASETS[args.dataset]
    if method.endswith("_kd"):
        if not args.teacher_ckpt:
            raise SystemExit(f"{method}: --teacher-ckpt is needed to train it")
        cmd = [sys.executable, "tools/train_distill.py", f"configs/distill/{spec['distill']}.py", "--teacher-ckpt", args.teacher_ckpt]
    else:
        cmd = [sys.executable, "tools/train.py", f"configs/train/{spec['train']}.py"]
    cmd += ["--work-dir", str(work), "--cfg-options", *options(args, method, seed)]
    if not RunState(work).finished():
        cmd += ["--resume"]  # continue an interrupted run (a new folder starts fresh)
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return best_checkpoint(work)


def splits(args: argparse.Namespace) -> tuple[Any, Any]:
    """The dataset's val and train splits (read once per run)."""
    cfg = load_config(REPO / "configs" / "train" / f"{DATASETS[args.dataset]['train']}.py", {"data.root": data_root(args)})
    return read_split(dict(cfg.data), "val"), read_split(dict(cfg.data), "train")


def measure(method: str, ckpt: Path, args: argparse.Namespace, val: Any, train_split: Any) -> dict:
    """One row for ``ckpt``: accuracy on ``val``, sizes and latencies (``train_split`` calibrates INT8)."""
    import torch

    from detkd.binary.packing import pack_model, packed_sizes
    from detkd.export.onnx import sample_images

    detector = load_detector(ckpt).eval()
    if method == "int8":
        from detkd.engine.benchmark import evaluate_and_time_int8

        row = evaluate_and_time_int8(f"{args.dataset}_int8", detector, val, WORK / "onnx", args.threads, args.dataset,
                                     train_split, 200)
        row.update(deployed_runtime="onnxruntime", deployed_latency_ms=row["onnx_latency_ms"], method=method, epochs=args.epochs,
                   weights_kb=row["onnx_size_mb"] * 1024, split="val", teacher=None)  # weights_kb: the INT8 file
        return row
    row = evaluate_and_time(f"{args.dataset}_{method}", detector, val, WORK / "onnx", args.threads, dataset=args.dataset)
    sizes = packed_sizes(detector)
    binary = method.startswith("binary")
    row["weights_kb"] = ((sizes["binary_packed"] if binary else sizes["binary_float32"]) + sizes["other"]) / 1024
    if binary:  # the binary convs alone, exact bytes: float32 as trained vs 1 bit per weight (+ alpha per filter)
        row.update(binary_convs_float32_bytes=sizes["binary_float32"], binary_convs_packed_bytes=sizes["binary_packed"],
                   binary_convs_ratio=sizes["binary_float32"] / sizes["binary_packed"])
        image = sample_images(val, int(detector.imgsz), count=1)[:1]
        packed = pack_model(detector)
        with torch.no_grad():
            row["kernel_latency_ms"] = time_fn(lambda: packed(image), 5, 30).median_ms
    row.pop("onnx_outputs", None)
    row.update(method=method, epochs=args.epochs, split="val", teacher=args.teacher_ckpt if method.endswith("_kd") else None)
    return row


def main() -> int:
    args = parse_args()
    command = "python benchmarks/binary_student.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "binary_student.json", machine_info(args.threads), command.strip())
    if args.report:
        write_report(results)
        return 0

    def done(method: str, seed: int) -> bool:
        return results.has(method=method, dataset=args.dataset, seed=seed, epochs=args.epochs, policy=policy(method, args),
                           series=None)

    todo = [(m, s) for s in args.seeds for m in args.only if args.remeasure == done(m, s)]
    val, train_split = splits(args) if todo else (None, None)
    for method, seed in todo:  # seed-major: one seed's rows finish before the next seed starts
        ckpt = train(method, seed, args)
        row = measure(method, ckpt, args, val, train_split)
        row.update(seed=seed, policy=policy(method, args), checkpoint=relative_path(ckpt, REPO), teacher=relative_path(row["teacher"], REPO),
                   train_step_ms=train_step_ms(ckpt.parent) if method != "int8" else None,
                   val_curve=validation_curve(ckpt.parent) if method != "int8" else [], command=command.strip())
        row["name"] += f"_s{seed}"
        results.add(row, key=KEY)
        print(f"{row['name']}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f} onnx {row['onnx_latency_ms']:.2f} ms "
              f"deployed {row['deployed_latency_ms']:.2f} ms ({row['deployed_runtime']})", flush=True)
        write_report(results)
    write_report(results)
    return 0


def policy(method: str, args: argparse.Namespace) -> str | None:
    return args.policy if method.startswith("binary") else None


def paired(rows: list[dict[str, Any]], a: str, b: str, value: Any) -> str:
    """``value(row_a, row_b)`` for every seed that has both methods ``a`` and ``b``, as ``x, y (seeds s, t)``."""
    by_seed = {(r["method"], r.get("seed")): r for r in rows}
    seeds = sorted(s for m, s in by_seed if m == a and (b, s) in by_seed)
    if not seeds:
        return "-"
    return ", ".join(f"{value(by_seed[(a, s)], by_seed[(b, s)]):.1f}" for s in seeds) + f" (seeds {', '.join(map(str, seeds))})"


def targets(summaries: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets from the means over seeds, with the same seed's pairs (rows missing from the
    panel are skipped)."""
    lines = []
    fl, fk, i8, bl, bk = (summaries.get(m) for m in METHODS)
    for name, binary in (("binary_kd", bk), ("binary_labels", bl)):
        if fl and binary and fl.get("deployed_latency_ms") and binary.get("deployed_latency_ms"):
            per_seed = paired(rows, "float_labels", name, lambda f, b: f["deployed_latency_ms"] / b["deployed_latency_ms"])
            lines.append(f"- **Speed**: {name} deployed ({binary['deployed_runtime']}) {binary['deployed_latency_ms']:.2f} ms "
                         f"against float ONNX Runtime {fl['deployed_latency_ms']:.2f} ms: "
                         f"**{fl['deployed_latency_ms'] / binary['deployed_latency_ms']:.2f}x** (per seed {per_seed}; target ≥ 1.5x).")
            lines.append(f"- **Size**: binary-conv weights **{binary['binary_convs_ratio']:.1f}x** smaller than float32 "
                         f"(target ≥ 30x); whole model {binary['weights_kb'] / 1024:.2f} MB against {fl['weights_kb'] / 1024:.2f} MB.")
            break
    if fl and bk:
        gap = 100 * (fl["mAP50"] - bk["mAP50"])
        per_seed = paired(rows, "float_labels", "binary_kd", lambda f, b: 100 * (f["mAP50"] - b["mAP50"]))
        lines.append(f"- **Accuracy**: distilled binarized {bk['mAP50']:.3f} mAP50 (n={bk['n']}) against float labels-only "
                     f"{fl['mAP50']:.3f} (n={fl['n']}): **{gap:.1f} points** below (per seed {per_seed}; target ≤ 5).")
    if fl and bl and bk:
        lines.append(f"- Distillation moves the binarized student {100 * (bk['mAP50'] - bl['mAP50']):+.1f} mAP50, "
                     f"{100 * (bk['AP'] - bl['AP']):+.1f} AP" + (f"; the float student {100 * (fk['mAP50'] - fl['mAP50']):+.1f} / "
                                                              f"{100 * (fk['AP'] - fl['AP']):+.1f}" if fk else "") + " (means).")
    if fl and i8 and fl.get("deployed_latency_ms"):
        per_seed = paired(rows, "float_labels", "int8", lambda f, q: 100 * (f["mAP50"] - q["mAP50"]))
        lines.append(f"- **INT8**: {i8['mAP50']:.3f} mAP50 / {i8['AP']:.3f} AP at {i8['deployed_latency_ms']:.2f} ms "
                     f"({fl['deployed_latency_ms'] / i8['deployed_latency_ms']:.2f}x the float student's speed; "
                     f"mAP50 points below float per seed {per_seed}).")
    return lines


def write_report(results: ResultsFile) -> None:
    m = results.data["machine"]
    parts, plotted = [], []
    panels = sorted(dict.fromkeys((r["dataset"], r.get("series")) for r in results.rows),
                    key=lambda p: (list(DATASETS).index(p[0]), p[1] is not None, str(p[1])))
    for dataset, series in panels:
        rows = [r for name in METHODS for r in results.rows if r["method"] == name and r["dataset"] == dataset
                and r.get("series") == series]
        rows.sort(key=lambda r: (METHODS.index(r["method"]), r.get("epochs", 0), str(r.get("policy")), r.get("seed", 0)))
        for r in rows:
            r["group"] = f"{r['method']} ({r['epochs']} ep" + (f", policy {r['policy']})" if r.get("policy") else ")")
        summaries = seed_summary(rows, "group", ["mAP50", "AP", "onnx_latency_ms", "deployed_latency_ms", "weights_kb",
                                                 "binary_convs_ratio", "train_step_ms"])
        table = ["| method (epochs, policy) | seeds | mAP50 | AP | weights MB | binary-conv ratio | ONNX ms | deployed ms "
                 "(runtime) | step ms | val mAP50 gain, last validations |", "|---|---|---|---|---|---|---|---|---|---|"]
        by_method: dict[str, dict[str, Any]] = {}
        for s in summaries:
            members = [r for r in rows if r["group"] == s["group"]]
            first = members[0]
            s.update(method=first["method"], name=s["group"], deployed_runtime=first.get("deployed_runtime"),
                     dataset=dataset if series is None else f"{dataset}: {series}")
            by_method.setdefault(first["method"], s)
            steps = [r["train_step_ms"] for r in members if r.get("train_step_ms")]
            deployed = f"{s['deployed_latency_ms']:.2f} ({s['deployed_runtime']})" if s.get("deployed_latency_ms") else "-"
            ratio = f"{s['binary_convs_ratio']:.1f}x" if s.get("binary_convs_ratio") else "-"
            weights = f"{s['weights_kb'] / 1024:.2f}" if s.get("weights_kb") else "-"
            table.append(f"| {s['group']} | {s['n']} | {mean_sd([r['mAP50'] for r in members])} | "
                         f"{mean_sd([r['AP'] for r in members])} | {weights} | {ratio} | "
                         f"{s['onnx_latency_ms']:.2f} | {deployed} | "
                         f"{f'{statistics.median(steps):.0f}' if steps else '-'} | {last_validation_gain(members)} |")
        plotted += [s for s in summaries if s.get("deployed_latency_ms")]
        parts.append(f"**{dataset}{': ' + series if series else ''}** (val split; mean ± sample sd over the seeds; latency "
                     f"batch 1, median of 30 runs, {m['threads']} threads, {m['cpu']}, onnxruntime {m['onnxruntime']})\n\n"
                     + "\n".join(table) + "\n\n" + "\n".join(targets(by_method, rows)) + "\n\nEvery run:\n\n"
                     + markdown_table(rows, COLUMNS))
    write_markdown(RESULTS / "binary_student.md", "\n\n".join(parts) + "\n")
    if plotted:
        plot_map_vs_fps(plotted, RESULTS / "binary_student.png",
                        "Float / INT8 / binarized student: mAP50 (mean ± sd) vs deployed FPS",
                        latency="deployed_latency_ms", runtime="deployed runtime")


if __name__ == "__main__":
    sys.exit(main())
