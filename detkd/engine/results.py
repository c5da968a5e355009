"""Benchmark results files, their markdown tables and the mAP-vs-FPS plot.

One format for every benchmark: ``{"machine": {...}, "command": "...", "rows": [...]}``. Rows are
added one at a time and the file is rewritten atomically after each, so an interrupted benchmark
keeps its finished rows and a rerun skips them (:meth:`ResultsFile.has`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detkd.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["ResultsFile", "markdown_table", "plot_map_vs_fps"]

REQUIRED = ("name", "dataset", "imgsz", "params", "flops", "mAP50", "AP", "onnx_latency_ms")


class ResultsFile:
    """``benchmarks/results/<script>.json``: load, add rows (atomically), skip finished ones."""

    def __init__(self, path: str | Path, machine: dict[str, Any], command: str) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"machine": machine, "command": command, "rows": []}
        if self.path.is_file():
            self.data["rows"] = json.loads(self.path.read_text()).get("rows", [])

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.data["rows"]

    def has(self, **keys: Any) -> bool:
        """True if a row with these key values exists already."""
        return any(all(row.get(k) == v for k, v in keys.items()) for row in self.rows)

    def add(self, row: dict[str, Any], key: Sequence[str] = ("name", "dataset")) -> None:
        """Add (or replace the row with the same ``key`` values) and save.

        Rows are re-read from the file first, so two benchmark processes writing one results
        file (e.g. one per dataset) keep each other's rows.
        """
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise ValueError(f"result row {row.get('name')!r} lacks {missing}")
        if self.path.is_file():
            self.data["rows"] = json.loads(self.path.read_text()).get("rows", [])
        self.data["rows"] = [r for r in self.rows if any(r.get(k) != row.get(k) for k in key)] + [row]
        atomic_write_json(self.path, self.data)


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f}M" if value < 1e9 else f"{value / 1e9:.2f}G"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``columns`` (missing values shown as ``-``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) if c in row else "-" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def plot_map_vs_fps(rows: list[dict[str, Any]], out: str | Path, title: str, metric: str = "mAP50") -> Path:
    """Scatter of ``metric`` against ONNX Runtime FPS (1000 / onnx_latency_ms), one labelled point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for row in rows:
        fps = 1000.0 / row["onnx_latency_ms"]
        ax.scatter(fps, row[metric], s=40)
        ax.annotate(str(row["name"]), (fps, row[metric]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("FPS (ONNX Runtime, batch 1)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    buffer = io.BytesIO()  # render in memory, then the atomic write (two benchmark processes may plot at once)
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def write_markdown(path: str | Path, text: str) -> Path:
    return atomic_write_text(path, text)
