#!/usr/bin/env python
"""Does the demo's ordering hold across seeds? Run `tools/demo.py` for several training seeds.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--work-dir work_dirs/demo_seeds]

Each seed is a whole demo run (teacher, distilled student, labels-only student; the same built-in
dataset, generated once) in ``<work-dir>/seed_<N>``. Its three test-split rows go into
``benchmarks/results/demo_seeds.json`` (one row per seed and model, written as each seed finishes, so
an interrupted benchmark keeps its rows and a rerun skips finished seeds), then
``demo_seeds.md`` tabulates every row and, per model, the mean and spread over the seeds, with the
distillation gain (distilled - labels-only mAP50) of every seed, and ``demo_seeds.png`` plots them.
Run it on a quiet machine: the latencies are measured too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common import REPO, RESULTS

from detkd.commands import demo  # tools/demo.py's code: the pipeline measured here
from detkd.engine.benchmark import machine_info
from detkd.engine.results import ResultsFile, markdown_table, mean_sd, plot_map_vs_fps, write_markdown

KEY = ("name", "dataset", "seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "work_dirs" / "demo_seeds",
                        help="one demo work dir per seed below it, and the shared dataset (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=RESULTS / "demo_seeds.json", help="results file (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the latency measurement (default: %(default)s)")
    return parser.parse_args(argv)


def summary(rows: list[dict[str, Any]]) -> str:
    """Per model: mean ± standard deviation over seeds; then the distillation gain of every seed."""
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = ["| model | seeds | mAP50 | AP | ONNX latency (ms) | speedup vs teacher |", "|---|---|---|---|---|---|"]
    for name in demo.MODELS:
        mine = [r for r in rows if r["name"] == name]
        if mine:
            lines.append(f"| {name} | {len(mine)} | {mean_sd([r['mAP50'] for r in mine])} | {mean_sd([r['AP'] for r in mine])} | "
                         f"{mean_sd([r['onnx_latency_ms'] for r in mine])} | {mean_sd([r['speedup'] for r in mine])} |")
    gains = []
    for seed in seeds:
        by_name = {r["name"]: r for r in rows if int(r["seed"]) == seed}
        if {"student_distilled", "student_labels_only"} <= by_name.keys():
            gains.append((seed, by_name["student_distilled"]["mAP50"] - by_name["student_labels_only"]["mAP50"]))
    text = "\n".join(lines) + "\n"
    if gains:
        text += ("\nDistillation gain (distilled - labels-only test mAP50), per seed: "
                 + ", ".join(f"seed {s}: {g * 100:+.1f}" for s, g in gains)
                 + f"; smallest {min(g for _, g in gains) * 100:+.1f} points.\n")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = ResultsFile(args.results, machine_info(args.threads), "python benchmarks/demo_seeds.py " + " ".join(argv or sys.argv[1:]))
    data_root = args.work_dir / "data"
    for seed in args.seeds:
        if all(results.has(name=name, seed=seed) for name in demo.MODELS):
            print(f"seed {seed}: done already ({args.results})")
            continue
        work = args.work_dir / f"seed_{seed}"
        status = demo.main(["--work-dir", str(work), "--data-root", str(data_root), "--seed", str(seed),
                            "--threads", str(args.threads)])
        if status:
            return status
        for row in ResultsFile(work / "results.json", {}, "").rows:  # the demo's rows carry seed and speedup
            results.add(row, key=KEY)
    rows = sorted(results.rows, key=lambda r: (int(r["seed"]), demo.MODELS.index(r["name"])))
    m = results.data["machine"]
    text = (f"Built-in dataset (standard preset), test split; `tools/demo.py` defaults per seed. Latency: ONNX Runtime, "
            f"batch 1, median of 30 runs, {m['threads']} threads, {m['cpu']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}.\n\n"
            + summary(rows) + "\n" + markdown_table(rows, ["seed", *demo.COLUMNS]))
    write_markdown(args.results.with_suffix(".md"), text)
    plot_map_vs_fps(rows, args.results.with_suffix(".png"),  # one marker per model, a point per seed
                    f"Demo, seeds {', '.join(str(s) for s in sorted({int(r['seed']) for r in rows}))}: test mAP50 vs ONNX Runtime FPS")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
