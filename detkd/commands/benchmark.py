"""Compare detectors: accuracy, size, FLOPs and CPU latency (PyTorch eager and ONNX Runtime).

    python tools/benchmark.py CFG NAME=CKPT [NAME=CKPT ...] [--split val] [--threads 2] [--out-dir DIR]
        [--int8 [--calib-images 200] [--calib-split train]]

CFG gives the data (its ``--split`` is evaluated). Each checkpoint is a detkd checkpoint, or an
ultralytics ``.pt`` (needs ``--trust``: it is a pickle). For each model: COCO/VOC metrics on the
split, ONNX export verified against PyTorch, then batch-1 latency after warm-up (median/min/max of
``--iters`` runs) on both backends with ``--threads`` threads, decode + NMS timed separately.
A binarized model (``model.binary``) is also deployed as OpenVINO IR with its binary convs on
OpenVINO's BinaryConvolution (:mod:`detkd.export.openvino`) and timed there: ``deployed_runtime`` /
``deployed_latency_ms`` (ONNX Runtime's latency for every other model). ``--int8`` adds a row ``NAME:int8`` per model: the model quantized by ONNX Runtime's static
quantization (calibrated on ``--calib-images`` images of ``--calib-split``), its mAP and latency
measured through ONNX Runtime. Writes ``benchmark.json`` (machine, command, rows), ``benchmark.md``
(table) and ``benchmark.png`` (mAP50 vs FPS) into ``--out-dir``.
"""

from __future__ import annotations

import detkd  # noqa: F401  # first: sets the offline environment before other third-party imports

import argparse
from pathlib import Path

from detkd.config import DictAction, add_data_argument
from detkd.commands import command_line
from detkd.errors import add_debug_argument, run_tool

COLUMNS = ["name", "precision", "imgsz", "threads", "params", "flops", "mAP50", "AP", "torch_latency_ms", "onnx_latency_ms", "onnx_fps",
           "decode_ms", "onnx_size_mb", "deployed_runtime", "deployed_latency_ms"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="config whose data split is evaluated")
    parser.add_argument("models", nargs="+", metavar="NAME=CKPT", help="models to compare")
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2, help="threads for both backends (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=30, help="timed runs per measurement (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=Path("work_dirs/benchmark"))
    parser.add_argument("--int8", action="store_true", help="also measure each model quantized to INT8 (ONNX Runtime)")
    parser.add_argument("--calib-images", type=int, default=200, help="calibration images for --int8 (default: %(default)s)")
    parser.add_argument("--calib-split", default="train", help="split of the calibration images (default: %(default)s)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE")
    add_data_argument(parser)
    parser.add_argument("--trust", action="store_true", help="allow pickled checkpoints (ultralytics .pt files you trust)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    for spec in args.models:
        if "=" not in spec:
            parser.error(f"model {spec!r} is not NAME=CKPT")
    return args


def load(path: Path, imgsz: int, class_names: list[str], trust: bool):
    if path.suffix == ".pt":  # ultralytics checkpoint
        from detkd.models.ultralytics_adapter import load_ultralytics

        return load_ultralytics(str(path), class_names=class_names, imgsz=imgsz, trust=trust)
    from detkd.engine.checkpoint import load_detector

    return load_detector(path, trust=trust)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool(lambda: compare(args), args.debug)


def compare(args: argparse.Namespace) -> int:
    """Evaluate and time every model, then write the table and the plot; a fresh comparison every
    time (rows of an earlier run in the same --out-dir are dropped)."""
    from detkd.config import load_config, run_options
    from detkd.data.sources import read_split
    from detkd.engine.benchmark import evaluate_and_time, machine_info
    from detkd.engine.evaluate import check_classes
    from detkd.engine.results import ResultsFile, markdown_table, plot_map_vs_fps, write_markdown

    cfg = load_config(args.config, args.cfg_options, args.data)
    opts = run_options(cfg)
    index = read_split(dict(cfg.data), args.split)
    detectors = []
    for spec in args.models:  # every checkpoint loads and fits before anything is measured or written
        name, path = spec.split("=", 1)
        detector = load(Path(path), opts.imgsz, index.class_names, args.trust)
        check_classes(detector, index, path)
        detectors.append((name, path, detector))
    results = ResultsFile(args.out_dir / "benchmark.json", machine_info(args.threads), command_line(), fresh=True)
    calibration = read_split(dict(cfg.data), args.calib_split) if args.int8 else None
    for name, path, detector in detectors:
        row = evaluate_and_time(name, detector, index, args.out_dir, args.threads, dataset=str(cfg.data["root"]),
                                iters=args.iters, decode=opts.decode)
        results.add({**row, "checkpoint": path, "split": args.split, "precision": "float32"})
        if calibration is not None:
            from detkd.engine.benchmark import evaluate_and_time_int8

            row = evaluate_and_time_int8(f"{name}:int8", detector, index, args.out_dir, args.threads, str(cfg.data["root"]),
                                         calibration, args.calib_images, iters=args.iters, decode=opts.decode)
            results.add({**row, "checkpoint": path, "split": args.split})
    table = markdown_table(results.rows, COLUMNS)
    write_markdown(args.out_dir / "benchmark.md", table)
    plot_map_vs_fps(results.rows, args.out_dir / "benchmark.png", f"{cfg.data['root']} {args.split}, {args.threads} threads")
    print(table)
    print(f"written: {args.out_dir / 'benchmark.json'}, benchmark.md, benchmark.png")
    return 0
