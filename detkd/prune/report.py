"""Before/after report of a pruning run: the numbers users of pruning tools ask for.

Every model (original, pruned before retraining, retrained) is evaluated on the same split, exported
to ONNX (verified against PyTorch) and timed with ONNX Runtime in the same process with the same
threads, so "pruned, but is it faster?" is answered by a measurement, not by a FLOP count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from detkd.data.records import DatasetIndex
from detkd.engine.benchmark import evaluate_and_time, machine_info
from detkd.engine.results import REQUIRED, markdown_table, plot_map_vs_fps, write_markdown
from detkd.errors import DatasetError
from detkd.fileio import atomic_write_json
from detkd.options import DecodeConfig, PruneOptions

__all__ = ["COLUMNS", "add_to_results", "write_report"]

COLUMNS = ["name", "params", "flops", "onnx_size_mb", "onnx_latency_ms", "speedup", "param_ratio", "flop_ratio",
           "flops_to_latency", "mAP50", "AP"]


def write_report(models: dict[str, nn.Module], index: DatasetIndex, work_dir: str | Path, opts: PruneOptions,
                 threads: int, command: str = "", decode: DecodeConfig | None = None) -> dict[str, Any]:
    """Measure each of ``models`` (name -> detector; ``"original"`` first) and write
    ``report.json`` (machine, command, rows), ``report.md`` and ``report.png`` in ``work_dir``."""
    work_dir = Path(work_dir)
    rows = []
    for name, model in models.items():
        row = evaluate_and_time(name, model, index, work_dir / "onnx", threads, dataset=index.source, decode=decode)
        row.update(method="unpruned" if name == "original" else opts.method, retrained=name == "retrained",
                   ratio=None if name == "original" or opts.method == "singh" else opts.ratio, split=opts.eval_split)
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["speedup"] = base["onnx_latency_ms"] / row["onnx_latency_ms"]
        row["param_ratio"] = base["params"] / row["params"]
        row["flop_ratio"] = base["flops"] / row["flops"]
        row["flops_to_latency"] = row["speedup"] / row["flop_ratio"]  # 1.0: every FLOP saved became time saved
    report = {"machine": machine_info(threads), "command": command, "rows": rows}
    atomic_write_json(work_dir / "report.json", report)
    m = report["machine"]
    note = (f"{opts.method} pruning, layers {opts.layers!r}; {opts.eval_split} split of {index.source}; ONNX Runtime "
            f"batch 1, median of 30 runs, {threads} threads, {m['cpu']}. speedup, param_ratio and flop_ratio are against the original; flops_to_latency = speedup / flop_ratio (1: "
            "latency fell as much as FLOPs).\n\n")
    text = note + markdown_table(rows, COLUMNS)
    write_markdown(work_dir / "report.md", text)
    plot_map_vs_fps(rows, work_dir / "report.png", f"{opts.method} pruning: mAP50 and AP vs FPS ({threads} threads)",
                    metric=("mAP50", "AP"))
    print(text, flush=True)
    return report


def add_to_results(report: dict[str, Any], results_path: str | Path, prefix: str) -> Path:
    """Add the report's rows (named ``<prefix>:<stage>``) to an existing results file such as
    ``tools/benchmark.py``'s ``benchmark.json`` and redraw its plot (same name, ``.png``)."""
    import json

    from detkd.engine.results import ResultsFile

    path = Path(results_path)
    if not path.is_file():
        raise DatasetError(f"{path}: results file not found")
    existing = json.loads(path.read_text())
    results = ResultsFile(path, existing.get("machine", report["machine"]), existing.get("command", ""))
    for row in report["rows"]:
        results.add({**row, "name": f"{prefix}:{row['name']}"})
    plot_rows = [r for r in results.rows if all(k in r for k in REQUIRED)]
    return plot_map_vs_fps(plot_rows, path.with_suffix(".png"), f"mAP50 vs FPS ({path.name})")
