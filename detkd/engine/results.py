"""Benchmark results files, their markdown tables and the mAP-vs-FPS plot.

One format for every benchmark: ``{"machine": {...}, "command": "...", "rows": [...]}``. Rows are
added one at a time and the file is rewritten atomically after each, so an interrupted benchmark
keeps its finished rows and a rerun skips them (:meth:`ResultsFile.has`).

The reporting protocol is enforced here, not described: a row never reports on the split that chose it
(``split`` != ``selected_on``); a protocol table's rows (``ResultsFile(..., protocol=True)``) also name their
``recipe``, ``seed`` and ``machine`` (:func:`detkd.engine.benchmark.machine_fingerprint`); a speedup is a ratio of
two graphs timed in one interleaved measurement on one machine (:func:`paired_speedup`), never of two runs; and
a verdict over seeds says which seeds miss (:func:`seed_verdict`).
"""

from __future__ import annotations

import io
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detkd.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["LOG_AXIS_SPAN", "PROTOCOL_FIELDS", "ProtocolError", "ResultsFile", "check_protocol", "last_validation_gain", "markdown_table", "mean_sd", "pareto_front", "plot_map_vs_fps", "relative_path",
           "paired_speedup", "row_speedup", "seed_summary", "seed_verdict", "write_markdown"]

REQUIRED = ("name", "dataset", "imgsz", "params", "flops", "mAP50", "AP", "onnx_latency_ms")
PROTOCOL_FIELDS = ("split", "selected_on", "recipe", "seed", "machine")  # what a protocol table's row must state


class ProtocolError(ValueError):
    """A row or a figure that breaks the reporting protocol: reported on the split that chose it, missing what it
    must state, or a ratio of timings that were not measured together on one machine."""


def check_protocol(row: dict[str, Any], required: bool = False) -> None:
    """Refuse a row reported on the split that chose its checkpoint or settings (``split == selected_on``); with
    ``required``, also one that does not state every :data:`PROTOCOL_FIELDS` (``machine`` with its ``id``)."""
    name = row.get("name")
    if required:
        missing = [k for k in PROTOCOL_FIELDS if row.get(k) is None]
        if missing:
            raise ProtocolError(f"result row {name!r} does not state {', '.join(missing)}")
        if not isinstance(row["machine"], dict) or not row["machine"].get("id"):
            raise ProtocolError(f"result row {name!r}: its machine has no fingerprint id")
    if row.get("split") is not None and row.get("split") == row.get("selected_on"):
        raise ProtocolError(f"result row {name!r} reports on {row['split']!r}, the split that chose it (selected_on); "
                            "report on a split that chose nothing")


class ResultsFile:
    """``benchmarks/results/<script>.json``: load, add rows (atomically), skip finished ones."""

    def __init__(self, path: str | Path, machine: dict[str, Any], command: str, fresh: bool = False,
                 protocol: bool = False) -> None:
        """``fresh``: start with no rows (the file is rewritten empty now, so rows of an earlier run
        are never mixed into this one); otherwise keep the file's rows (resumable benchmarks).
        ``protocol``: every row must state :data:`PROTOCOL_FIELDS` (:func:`check_protocol`)."""
        self.path = Path(path)
        self.protocol = protocol
        self.data: dict[str, Any] = {"machine": machine, "command": command, "rows": []}
        if fresh:
            atomic_write_json(self.path, self.data)
        elif self.path.is_file():
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
        check_protocol(row, required=self.protocol)
        self._reload()
        self.data["rows"] = [r for r in self.rows if any(r.get(k) != row.get(k) for k in key)] + [row]
        atomic_write_json(self.path, self.data)

    def _reload(self) -> None:
        """Take the rows from the file again (another process may have added some since)."""
        if self.path.is_file():
            self.data["rows"] = json.loads(self.path.read_text()).get("rows", [])

    def update(self, match: Callable[[dict[str, Any]], bool], **values: Any) -> int:
        """Set ``values`` on every row that ``match`` accepts, in place (rows re-read first, saved atomically);
        returns how many rows changed. E.g. move rows to a ``series`` of their own."""
        self._reload()
        chosen = [row for row in self.rows if match(row)]
        for row in chosen:
            row.update(values)
        if chosen:
            atomic_write_json(self.path, self.data)
        return len(chosen)


def paired_speedup(timing: dict[str, Any], fast: str, slow: str) -> float:
    """How many times faster ``fast`` ran than ``slow`` in one interleaved measurement
    (:func:`detkd.engine.benchmark.interleaved_onnx_latency`'s record): the median over its rounds of
    ``slow / fast``. Two graphs that were not timed together have no speedup here.

    Raises:
        ProtocolError: either graph is not in ``timing``, or the record lacks its rounds or machine.
    """
    rounds = timing.get("rounds_ms") or {}
    absent = [name for name in (fast, slow) if name not in rounds]
    if absent:
        raise ProtocolError(f"no speedup of {fast!r} over {slow!r}: {', '.join(map(repr, absent))} not timed in that "
                            f"measurement (run {timing.get('run')}); time both graphs together")
    if not (timing.get("machine") or {}).get("id"):
        raise ProtocolError(f"no speedup of {fast!r} over {slow!r}: the measurement records no machine fingerprint")
    return statistics.median(b / a for a, b in zip(rounds[fast], rounds[slow], strict=True))


def row_speedup(fast: dict[str, Any], slow: dict[str, Any]) -> float:
    """The speedup of row ``fast`` over row ``slow`` from a timing record (``timing``) one of them carries in which
    both graphs, named by their rows' ``name``, were timed together (:func:`paired_speedup`).

    Raises:
        ProtocolError: no such record: the rows were timed in different runs (or on different machines), and
            dividing their latencies would mix machine states.
    """
    names = str(fast["name"]), str(slow["name"])
    for timing in (fast.get("timing"), slow.get("timing")):
        if timing and all(n in (timing.get("rounds_ms") or {}) for n in names):
            return paired_speedup(timing, *names)
    runs = [(r.get("timing") or {}) for r in (fast, slow)]
    machines = {str((t.get("machine") or {}).get("id")) for t in runs}
    where = f"on different machines ({' / '.join(sorted(machines))})" if len(machines) > 1 else "in different runs"
    raise ProtocolError(f"no speedup of {names[0]!r} over {names[1]!r}: they were timed {where}, not together; "
                        "time both graphs in one measurement")


def seed_verdict(values: dict[int, float], target: float, higher: bool = True) -> dict[str, Any]:
    """A target judged over seeds: ``met`` when the mean meets it (``>= target``, or ``<=`` when not ``higher``),
    ``missed`` lists every seed whose own value misses (flagged even when the mean is met), ``mean``, ``n``."""
    if not values:
        return {"mean": None, "n": 0, "met": False, "missed": []}
    mean = statistics.fmean(values.values())

    def ok(value: float) -> bool:
        return value >= target if higher else value <= target

    return {"mean": mean, "n": len(values), "met": ok(mean), "missed": sorted(s for s, v in values.items() if not ok(v))}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f}M" if value < 1e9 else f"{value / 1e9:.2f}G"
    return str(value)


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± sample standard deviation`` of several runs (seeds); one value alone is shown as it is."""
    values = [float(v) for v in values]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def seed_summary(rows: Sequence[dict[str, Any]], by: str, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per value of ``by`` (in first-seen order) over the runs (seeds) that share it: ``n``,
    and for every metric ``<metric>`` (mean) and ``<metric>_sd`` (sample standard deviation, 0.0 for
    one run). Rows missing a metric (None) are left out of that metric's mean."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    out = []
    for value, members in groups.items():
        summary: dict[str, Any] = {by: value, "n": len(members)}
        for metric in metrics:
            values = [float(r[metric]) for r in members if r.get(metric) is not None]
            summary[metric] = statistics.fmean(values) if values else None
            summary[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        out.append(summary)
    return out


def last_validation_gain(rows: Sequence[dict[str, Any]], key: str = "val_curve") -> str:
    """Has training stopped improving? ``mean ± sd`` over the runs (rows with a ``val_curve`` of
    ``(epoch, mAP50)`` pairs) of the last validation's value minus the one before, in points, with the
    two epochs; ``-`` when no run has two validations."""
    pairs = [r[key][-2:] for r in rows if len(r.get(key) or []) >= 2]
    if not pairs:
        return "-"
    gains = [100 * (b[1] - a[1]) for a, b in pairs]
    return f"{mean_sd(gains, 1)} (ep {pairs[0][0][0]} -> {pairs[0][1][0]})"


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``columns`` (missing values shown as ``-``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) if c in row else "-" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher x and higher y), by rising x.

    A point is dominated when another is at least as good on both and better on one; ties keep both.
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(ox >= x and oy >= y and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


LOG_AXIS_SPAN = 10.0  # FPS axes spanning more than this factor are drawn on a log scale


def plot_map_vs_fps(rows: list[dict[str, Any]], out: str | Path, title: str, metric: str | Sequence[str] = "mAP50",
                    latency: str = "onnx_latency_ms", runtime: str = "ONNX Runtime") -> Path:
    """``metric`` against FPS (1000 / ``latency``, measured in ``runtime``): one panel per ``dataset``
    (columns) and per metric when ``metric`` is several (rows, e.g. ``("mAP50", "AP")``), one marker per
    row name (the legend names them, so no label overlaps), each panel's Pareto front dashed, and a log
    FPS axis where a panel's FPS span more than :data:`LOG_AXIS_SPAN` x. Rows that carry
    ``<metric>_sd`` (means over seeds, :func:`seed_summary`) get a vertical error bar of one standard
    deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    metrics = [metric] if isinstance(metric, str) else list(metric)
    usable = [r for r in rows if r.get(latency) and any(r.get(m) is not None for m in metrics)]
    datasets = list(dict.fromkeys(str(r.get("dataset", "")) for r in usable)) or [""]
    names = list(dict.fromkeys(str(r["name"]) for r in usable))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    markers = "osD^v<>pPX*h"
    style = {name: (colours(i % colours.N), markers[i % len(markers)]) for i, name in enumerate(names)}
    fig, axes = plt.subplots(len(metrics), len(datasets), figsize=(4.8 * len(datasets), 4.2 * len(metrics)), dpi=120,
                             squeeze=False)
    handles: dict[str, Any] = {}
    for ax_row, name_of_metric in zip(axes, metrics, strict=True):
        for ax, dataset in zip(ax_row, datasets, strict=True):
            panel = [r for r in usable if str(r.get("dataset", "")) == dataset and r.get(name_of_metric) is not None]
            points = [(1000.0 / float(r[latency]), float(r[name_of_metric])) for r in panel]
            for row, (fps, value) in zip(panel, points, strict=True):
                colour, marker = style[str(row["name"])]
                handles[str(row["name"])] = ax.scatter(fps, value, s=46, color=colour, marker=marker, zorder=3)
                if row.get(f"{name_of_metric}_sd"):
                    ax.errorbar(fps, value, yerr=float(row[f"{name_of_metric}_sd"]), color=colour, capsize=3, lw=1, zorder=3)
            front = pareto_front(points)
            if len(front) > 1:
                line = ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="0.45",
                               lw=1.1, zorder=2)[0]
                handles.setdefault("Pareto front", line)
            if points and max(p[0] for p in points) > LOG_AXIS_SPAN * min(p[0] for p in points):
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels like 3x10^1 crowd each other
            ax.set_xlabel(f"FPS ({runtime}, batch 1)")
            ax.set_ylabel(name_of_metric)
            ax.set_title(dataset or title, fontsize=10)
            ax.grid(alpha=0.3, which="both")
    if len(datasets) > 1 or datasets[0]:
        fig.suptitle(title, fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(out)
    buffer = io.BytesIO()  # render in memory, then the atomic write (two benchmark processes may plot at once)
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out, buffer.getvalue())
    return out



def relative_path(path: str | Path | None, root: str | Path) -> str | None:
    """``path`` as results files record it: relative to ``root`` (the repository) when inside it,
    else absolute; ``None`` stays ``None``."""
    if path is None:
        return None
    resolved, root = Path(path).resolve(), Path(root).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)

def write_markdown(path: str | Path, text: str) -> Path:
    return atomic_write_text(path, text)
