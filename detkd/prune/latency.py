"""Latency that follows FLOPs: channel rounding, a per-layer latency table, and latency-aware plans.

Removing filters saves FLOPs, but the CPU's convolution kernels work in blocks of channels (8 or 16
floats per vector register), so a conv left with 37 filters costs about what it costs with 40, and
the FLOPs saved in a low-resolution layer are worth less time than those saved in a high-resolution
one. Four tools:

- :func:`round_removal`: remove fewer filters so every pruned conv keeps a multiple of ``multiple``
  (``prune.round_to``, default 8); the spared filters are the removed ones that score highest.
- :func:`measure_latency_table`: for each prunable conv, the ONNX Runtime latency (batch 1, the
  given threads, median) of that conv together with the convs that read its output, at several
  filter counts, each a multiple of ``multiple``; measured once on the machine and kept as JSON
  (``W/latency.json`` in a pruning run).
- :func:`plan_by_latency`: rank all filters of all convs together by ``importance / latency saved
  per filter`` (the slope of the conv's row in the table; importance divided by its conv's mean so
  convs compare) and remove the lowest ``ratio`` of them (``prune.latency_aware``).
- :func:`filter_flops`: per conv, the multiply-adds one of its filters costs (its own output plane
  and the input plane it feeds to every consumer conv), which ``prune.sparsity.cost`` uses to make
  the sparsity penalty pull harder where removing a filter saves more.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from detkd.prune.groups import PruningGraph
from detkd.prune.importance import Importance

__all__ = ["LatencyTable", "filter_flops", "latency_slopes", "measure_latency_table", "plan_by_latency", "round_removal"]

# {"imgsz": S, "threads": T, "multiple": M, "layers": {conv: {"channels": [c...], "ms": [t...]}}}
LatencyTable = dict[str, Any]


def round_removal(removed: Mapping[str, Sequence[int]], channels: Mapping[str, int], scores: Mapping[str, torch.Tensor],
                  multiple: int) -> dict[str, list[int]]:
    """Remove fewer filters so each conv keeps a multiple of ``multiple`` (or all its filters).

    Args:
        removed: per conv, the filter indices chosen for removal.
        channels: per conv, its filter count before pruning.
        scores: per conv, ``Float[C]`` importance (higher = keep): the removed filters that score
            highest are spared first.
        multiple: the channel multiple (1: no change).

    Returns:
        Per conv, the sorted indices still removed; ``channels - len`` is a multiple of ``multiple``
        or equals ``channels``.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    out = {}
    for name, idx in removed.items():
        idx = sorted(set(int(i) for i in idx))
        total = int(channels[name])
        kept = total - len(idx)
        target = min(total, math.ceil(kept / multiple) * multiple) if kept > 0 else multiple
        spare = target - kept
        if spare > 0 and idx:
            score = scores[name][torch.tensor(idx)]
            order = score.argsort(descending=True, stable=True)[:spare]
            spared = {idx[int(i)] for i in order}
            idx = [i for i in idx if i not in spared]
        out[name] = idx
    return out


class _Probe(nn.Module):
    """A conv with ``c`` filters and the convs that read its output, each on its own input."""

    def __init__(self, conv: nn.Conv2d, consumers: Sequence[nn.Conv2d], c: int) -> None:
        super().__init__()
        self.conv = _resized(conv, out_channels=c)
        self.consumers = nn.ModuleList(_resized(k, in_channels=c) for k in consumers)

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.relu(self.conv(x)), *(k(i) for k, i in zip(self.consumers, inputs, strict=True)))


def _resized(conv: nn.Conv2d, in_channels: int | None = None, out_channels: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(in_channels or conv.in_channels, out_channels or conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, conv.dilation, conv.groups, conv.bias is not None)


def _conv_shapes(detector: nn.Module, names: Iterable[str], imgsz: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """The (input, output) shapes of every conv ``names`` at batch 1 and ``imgsz`` (one forward, eval mode)."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def record(name: str) -> Any:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            shapes.setdefault(name, (tuple(args[0].shape), tuple(output.shape)))
        return hook

    handles = [detector.get_submodule(n).register_forward_hook(record(n)) for n in names]
    training = detector.training
    detector.eval()
    try:
        with torch.no_grad():
            detector(torch.zeros(1, 3, imgsz, imgsz, device=next(detector.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        detector.train(training)
    return shapes


def _input_shapes(detector: nn.Module, names: Iterable[str], imgsz: int) -> dict[str, tuple[int, ...]]:
    """The input shape of every conv ``names`` at batch 1 and ``imgsz``."""
    return {name: shape[0] for name, shape in _conv_shapes(detector, names, imgsz).items()}


def filter_flops(detector: nn.Module, names: Sequence[str], imgsz: int | None = None,
                 graph: PruningGraph | None = None) -> dict[str, float]:
    """Per conv of ``names``, the multiply-adds (batch 1, ``imgsz``) that removing one of its filters saves.

    For conv ``n`` with output ``[1, O, H, W]``, kernel ``kh x kw`` and ``I / groups`` inputs per filter,
    its own share is ``H * W * (I / groups) * kh * kw``; every consumer conv ``c`` (output
    ``[1, O_c, H_c, W_c]``) adds ``H_c * W_c * (O_c / groups_c) * kh_c * kw_c`` for the input channel it
    loses. A filter of a high-resolution layer costs more than one of a wide low-resolution layer:
    the FLOPs that pruning saves are the sum of these over the removed filters.
    """
    size = int(imgsz or detector.imgsz)
    graph = graph or PruningGraph(detector, size)
    consumers = {n: graph.consumer_convs(n) for n in names}
    shapes = _conv_shapes(detector, [*names, *{c for cs in consumers.values() for c in cs}], size)

    def per_plane(conv: nn.Conv2d, out_shape: tuple[int, ...], channels: int) -> float:
        kh, kw = conv.kernel_size
        return float(out_shape[2] * out_shape[3] * channels * kh * kw)

    out = {}
    for name in names:
        conv = graph.conv(name)
        own = per_plane(conv, shapes[name][1], conv.in_channels // conv.groups)
        fed = sum(per_plane(graph.conv(c), shapes[c][1], graph.conv(c).out_channels // graph.conv(c).groups)
                  for c in consumers[name])
        out[name] = own + fed
    return out


def _time_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], threads: int, iters: int) -> float:
    """Median ms of ``module`` exported to ONNX and run by ONNX Runtime (CPU, ``threads``)."""
    from detkd.export.onnx import ort_session

    names = [f"x{i}" for i in range(len(inputs))]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "probe.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), inputs, str(path), input_names=names, opset_version=17, dynamo=False)
        session = ort_session(path, threads)
    feed = {n: t.numpy().astype(np.float32) for n, t in zip(names, inputs, strict=True)}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def measure_latency_table(detector: nn.Module, names: Sequence[str], imgsz: int | None = None, threads: int = 2,
                          multiple: int = 8, points: int = 4, iters: int = 20, graph: PruningGraph | None = None) -> LatencyTable:
    """Measure, for every conv of ``names``, the latency of the conv plus its consumer convs at
    ``points`` filter counts from its full width down to a quarter (multiples of ``multiple``).

    Returns a :data:`LatencyTable` (JSON-ready). Weights are random: latency does not depend on them.
    ``graph``: the detector's dependency graph when the caller has one (tracing it again costs seconds).
    """
    size = int(imgsz or detector.imgsz)
    graph = graph or PruningGraph(detector, size)
    consumers = {n: graph.consumer_convs(n) for n in names}
    shapes = _input_shapes(detector, [*names, *{c for cs in consumers.values() for c in cs}], size)
    layers: dict[str, dict[str, list[float]]] = {}
    generator = torch.Generator().manual_seed(0)
    for name in names:
        conv = graph.conv(name)
        full = conv.out_channels
        counts = sorted({max(multiple, min(full, round(full * f / multiple) * multiple))
                         for f in np.linspace(1.0, 0.25, max(2, points))} | {full})
        readers = [graph.conv(c) for c in consumers[name]]
        row: dict[str, list[float]] = {"channels": [], "ms": []}
        for c in counts:
            x = torch.rand(shapes[name], generator=generator)
            ins = [torch.rand((1, c, *shapes[k][2:]), generator=generator) for k in consumers[name]]
            with torch.no_grad():
                probe = _Probe(conv, readers, c)
            row["channels"].append(int(c))
            row["ms"].append(_time_onnx(probe, (x, *ins), threads, iters))
        layers[name] = row
    return {"imgsz": size, "threads": threads, "multiple": multiple, "layers": layers}


def latency_slopes(table: LatencyTable, names: Iterable[str]) -> dict[str, float]:
    """Per conv, the measured ms saved per filter removed: the least-squares slope of its row
    (clamped to at least 1e-6 ms, so a flat row makes its filters costly to keep, never free)."""
    out = {}
    for name in names:
        row = table["layers"].get(name)
        if row is None:
            raise KeyError(f"{name}: not in the latency table (measure it with these layers)")
        c = np.asarray(row["channels"], dtype=float)
        t = np.asarray(row["ms"], dtype=float)
        slope = float(np.polyfit(c, t, 1)[0]) if len(c) > 1 and np.ptp(c) > 0 else 0.0
        out[name] = max(slope, 1e-6)
    return out


def plan_by_latency(graph: PruningGraph, names: Iterable[str], importance: Importance, table: LatencyTable,
                    ratio: float, min_keep: int = 8) -> dict[str, list[int]]:
    """Remove the ``ratio`` of all filters of ``names`` with the least importance per ms saved.

    A filter's score is its importance divided by its conv's mean importance (scores then compare
    across convs whatever their scale), divided by its conv's :func:`latency_slopes` value; the
    lowest-scoring ``ratio`` of all filters go, each conv keeping at least ``min_keep``.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    names = list(names)
    slopes = latency_slopes(table, names)
    scores = {}
    for name in names:
        raw = importance(graph, name).float()
        scores[name] = raw / raw.mean().clamp_min(1e-12) / slopes[name]
    ranked = sorted(((float(v), name, i) for name in names for i, v in enumerate(scores[name])), key=lambda x: x[0])
    budget = round(ratio * len(ranked))
    removed: dict[str, list[int]] = {name: [] for name in names}
    for _, name, i in ranked:
        if budget <= 0:
            break
        if len(scores[name]) - len(removed[name]) > max(1, min_keep):
            removed[name].append(i)
            budget -= 1
    return {name: sorted(idx) for name, idx in removed.items()}
