"""Latency, size and cost of a detector: PyTorch eager and ONNX Runtime, on the CPU.

Latency is the median of ``iters`` timed runs at batch 1 after ``warmup`` untimed runs, with the
thread count fixed for both backends; decoding + NMS is timed separately (it is Python either way).
FLOPs are counted by ``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs) at batch 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from detkd.export.onnx import flatten_outputs, ort_session
from detkd.models.detector import DecodeConfig

__all__ = ["Timing", "benchmark_detector", "count_flops", "count_params", "evaluate_and_time", "evaluate_and_time_int8",
           "interleaved_onnx_latency", "machine_fingerprint", "machine_info", "paired_onnx_latency", "time_fn", "train_step_ms",
           "validation_curve"]


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    iters: int


def train_step_ms(work_dir: str | Path, skip_epochs: int = 1) -> float | None:
    """Median training step time (ms) of the run(s) in ``work_dir``: mmengine's per-iteration ``time``
    (data loading included) from every ``<timestamp>/vis_data/scalars.json``, after the first
    ``skip_epochs`` epochs (warm-up, caches being built). None when no step was logged."""
    times = []
    for scalars in Path(work_dir).glob("2*/vis_data/scalars.json"):
        for line in scalars.read_text().splitlines():
            entry = json.loads(line)
            if "time" in entry and "loss" in entry and entry.get("epoch", 1) > skip_epochs:
                times.append(float(entry["time"]))
    return 1000.0 * statistics.median(times) if times else None


def validation_curve(work_dir: str | Path, key: str = "coco/AP50") -> list[tuple[int, float]]:
    """``[(epoch, value), ...]`` of every validation the run(s) in ``work_dir`` logged (mmengine's
    ``scalars.json``; a validation entry's ``step`` is its epoch), by epoch; a resumed run's
    repeated epochs keep the last value."""
    curve: dict[int, float] = {}
    for scalars in sorted(Path(work_dir).glob("2*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            entry = json.loads(line)
            if key in entry and "step" in entry:
                curve[int(entry["step"])] = float(entry[key])
    return sorted(curve.items())


def time_fn(fn: Callable[[], Any], warmup: int = 5, iters: int = 30) -> Timing:
    """Time ``fn()`` ``iters`` times after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return Timing(statistics.median(samples), min(samples), max(samples), iters)


def interleaved_onnx_latency(
    graphs: dict[str, tuple[str | Path, torch.Tensor]], threads: int, rounds: int = 5, warmup: int = 5, iters: int = 30,
) -> dict[str, Any]:
    """Batch-1 ONNX Runtime latency of several graphs measured in turn, in one process, so that any ratio of two of
    them comes from one machine state: ``rounds`` rounds, each timing every graph once (median of ``iters`` runs,
    after ``warmup``), in the order given; a drift of the machine's speed hits all of them alike.

    Args:
        graphs: ``name -> (onnx_path, image)``, ``image`` ``Float[1, 3, H, W]`` in [0, 1] at the graph's input size.

    Returns:
        A timing record: ``ms`` (name -> median over rounds of each round's median), ``rounds_ms`` (name -> the
        per-round medians, for per-round ratios: :func:`detkd.engine.results.paired_speedup`), ``machine``
        (:func:`machine_fingerprint`), ``run`` (an id shared by every graph of this measurement), ``threads``,
        ``rounds``, ``iters``.
    """
    if len(graphs) < 2:
        raise ValueError(f"interleaved timing needs at least two graphs, got {list(graphs)}")
    sessions = {name: (ort_session(path, threads), {"images": image.numpy()}) for name, (path, image) in graphs.items()}
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, (session, feed) in sessions.items():
            times[name].append(time_fn(lambda: session.run(None, feed), warmup, iters).median_ms)  # noqa: B023 (called at once)
    machine = machine_fingerprint(threads)
    run = hashlib.sha256(f"{machine['id']} {time.time_ns()} {sorted(graphs)}".encode()).hexdigest()[:12]
    return {"ms": {name: statistics.median(t) for name, t in times.items()}, "rounds_ms": times, "machine": machine,
            "run": run, "threads": threads, "rounds": rounds, "iters": iters}


def paired_onnx_latency(
    first: tuple[str | Path, torch.Tensor], second: tuple[str | Path, torch.Tensor], threads: int,
    rounds: int = 5, warmup: int = 5, iters: int = 30,
) -> dict[str, Any]:
    """Batch-1 ONNX Runtime latency of two graphs measured in alternation (:func:`interleaved_onnx_latency`), for a
    speed ratio both sides of which come from one machine state.

    Args:
        first, second: ``(onnx_path, image)``, ``image`` ``Float[1, 3, H, W]`` in [0, 1] at the graph's input size.

    Returns:
        ``first_ms`` / ``second_ms``: the median over rounds of each round's median; ``ratios``: ``second / first``
        per round (how much faster ``first`` is); ``ratio``: their median; ``threads``, ``rounds``, ``iters``, and
        ``machine`` / ``run`` (the timing record's).
    """
    record = interleaved_onnx_latency({"first": first, "second": second}, threads, rounds, warmup, iters)
    ratios = [b / a for a, b in zip(record["rounds_ms"]["first"], record["rounds_ms"]["second"], strict=True)]
    return {"first_ms": record["ms"]["first"], "second_ms": record["ms"]["second"], "ratios": ratios,
            "ratio": statistics.median(ratios), "threads": threads, "rounds": rounds, "iters": iters,
            "machine": record["machine"], "run": record["run"]}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, imgsz: int) -> int:
    """Forward FLOPs at batch 1 (2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 3, imgsz, imgsz))
    return int(counter.get_total_flops())


def _cpuinfo(key: str) -> str | None:
    """The first ``key`` line's value in ``/proc/cpuinfo`` (None where there is none: not Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    return sorted((_cpuinfo("flags") or "").split())


def machine_fingerprint(threads: int) -> dict[str, Any]:
    """What a timing depends on: CPU model and instruction-set flags, cores, threads, torch and onnxruntime versions;
    ``id`` (12 hex digits) is a hash of the rest. Two timings may be divided only when their ``id`` agree."""
    flags = _cpu_flags()
    fields: dict[str, Any] = {
        "cpu": _cpu_name(), "cpu_flags_sha": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:12],
        "avx512": any(f.startswith("avx512") for f in flags), "cores": os.cpu_count(), "threads": threads,
        "torch": torch.__version__, "onnxruntime": ort.__version__,
    }
    return {**fields, "id": hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]}


def machine_info(threads: int) -> dict[str, Any]:
    """What the figures were measured on (written into every results file)."""
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }


def benchmark_detector(
    detector: nn.Module, imgsz: int, threads: int, onnx_path: str | Path | None = None,
    image: torch.Tensor | None = None, warmup: int = 5, iters: int = 30,
) -> dict[str, Any]:
    """Params, FLOPs and batch-1 latency (PyTorch eager, ONNX Runtime when ``onnx_path`` is given).

    Args:
        image: Float[1, 3, imgsz, imgsz] in [0, 1]; a real image makes the decode timing realistic
            (random input yields few candidates above the score threshold).
    """
    torch.set_num_threads(threads)
    detector = detector.eval()
    x = image if image is not None else torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = time_fn(lambda: detector(x), warmup, iters)
        outputs = detector(x)
        decode = time_fn(lambda: detector.decode(outputs, DecodeConfig(score_thr=0.05)), warmup, iters)
    row: dict[str, Any] = {
        "imgsz": imgsz, "threads": threads, "params": count_params(detector), "flops": count_flops(detector, imgsz),
        "torch_latency_ms": eager.median_ms, "torch_latency": asdict(eager), "decode_ms": decode.median_ms,
        "torch_fps": 1000.0 / eager.median_ms,
    }
    if onnx_path is not None:
        session = ort_session(onnx_path, threads)
        feed = {"images": x.numpy()}
        onnx_t = time_fn(lambda: session.run(None, feed), warmup, iters)
        row.update(onnx_latency_ms=onnx_t.median_ms, onnx_latency=asdict(onnx_t), onnx_fps=1000.0 / onnx_t.median_ms,
                   onnx_size_mb=Path(onnx_path).stat().st_size / 2**20, onnx_outputs=flatten_outputs(outputs)[1])
    return row


def evaluate_and_time(
    name: str, detector: nn.Module, index: Any, out_dir: str | Path, threads: int, dataset: str,
    iters: int = 30, batch_size: int = 8, decode: DecodeConfig | None = None,
) -> dict[str, Any]:
    """One results row: accuracy on ``index`` (thresholds ``decode``, default the config default)
    plus size, FLOPs and latency of ``detector``.

    Exports ``out_dir/<name>.onnx`` (verified against PyTorch on real images) and times both
    backends at batch 1 on a real image of the split.
    """
    from detkd.engine.evaluate import evaluate_model
    from detkd.export.onnx import export_onnx, sample_images

    out_dir = Path(out_dir)
    imgsz = int(detector.imgsz)
    metrics, _ = evaluate_model(detector, index, batch_size=batch_size, progress=False, decode_cfg=decode)
    images = sample_images(index, imgsz, count=4)
    onnx_path = out_dir / f"{name}.onnx"
    export_onnx(detector, onnx_path, imgsz, check_images=images)
    row = {"name": name, "dataset": dataset, "mAP50": metrics["AP50"], "AP": metrics["AP"],
           "voc_AP50": metrics["voc_AP50"], "voc07_AP50": metrics["voc07_AP50"]}
    row.update(benchmark_detector(detector, imgsz, threads, onnx_path, image=images[:1], iters=iters))
    row.update(deployed_runtime="onnxruntime", deployed_latency_ms=row["onnx_latency_ms"])
    from detkd.binary.layers import has_binary_convs
    from detkd.export.openvino import OpenVINODetector, export_binary_ir

    if has_binary_convs(detector):  # ONNX Runtime runs the float simulation; deployed, the binary convs run on OpenVINO
        xml = out_dir / f"{name}.xml"
        export_binary_ir(detector, xml, imgsz, check_images=images)
        deployed = OpenVINODetector(xml, detector, threads)
        feed = images[:1].numpy()
        timing = time_fn(lambda: deployed.run(feed), 5, iters)
        row.update(deployed_runtime="openvino", deployed_latency_ms=timing.median_ms, deployed_latency=asdict(timing),
                   deployed_size_mb=(xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20)
    return row


def evaluate_and_time_int8(
    name: str, detector: nn.Module, index: Any, out_dir: str | Path, threads: int, dataset: str, calibration_index: Any,
    calibration_images: int = 200, iters: int = 30, batch_size: int = 8, decode: DecodeConfig | None = None,
) -> dict[str, Any]:
    """One results row for ``detector`` quantized to INT8 (:mod:`detkd.export.int8`, calibrated on the
    first ``calibration_images`` images of ``calibration_index``, letterboxed to the model's size): its
    mAP through ONNX Runtime and its ONNX Runtime latency at batch 1; ``params``/``flops`` are the
    float model's.

    Writes ``out_dir/<name>.int8.onnx`` (and the verified float graph ``out_dir/<name>.float.onnx``).
    """
    from detkd.engine.evaluate import evaluate_model
    from detkd.export.int8 import OnnxRuntimeDetector, int8_parity, quantize_int8
    from detkd.export.onnx import export_onnx, sample_images

    out_dir = Path(out_dir)
    imgsz = int(detector.imgsz)
    images = sample_images(index, imgsz, count=4)
    calibration = sample_images(calibration_index, imgsz, count=calibration_images)
    float_path, int8_path = out_dir / f"{name}.float.onnx", out_dir / f"{name}.int8.onnx"
    export_onnx(detector, float_path, imgsz, check_images=images)
    quantize_int8(float_path, int8_path, calibration)
    torch.set_num_threads(threads)
    wrapped = OnnxRuntimeDetector(int8_path, detector, threads)
    metrics, _ = evaluate_model(wrapped, index, batch_size=batch_size, progress=False, decode_cfg=decode)
    feed = {"images": images[:1].numpy()}
    timing = time_fn(lambda: wrapped.session.run(None, feed), 5, iters)
    parity = int8_parity(detector, int8_path, images, threads)
    return {"name": name, "dataset": dataset, "mAP50": metrics["AP50"], "AP": metrics["AP"], "voc_AP50": metrics["voc_AP50"],
            "voc07_AP50": metrics["voc07_AP50"], "imgsz": imgsz, "threads": threads, "params": count_params(detector),
            "flops": count_flops(detector, imgsz), "onnx_latency_ms": timing.median_ms, "onnx_latency": asdict(timing),
            "onnx_fps": 1000.0 / timing.median_ms, "onnx_size_mb": int8_path.stat().st_size / 2**20, "precision": "int8",
            "int8_relative_error": parity.relative_error, "int8_match_rate": parity.match_rate, "calibration_images": len(calibration)}
