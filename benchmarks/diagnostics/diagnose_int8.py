#!/usr/bin/env python
"""Where does INT8 lose accuracy? One float checkpoint quantized several ways, each evaluated on val.

    python benchmarks/diagnostics/diagnose_int8.py CKPT [CKPT ...] [--config configs/train/fyolo_bccd.py]
        [--data ../shared/data/bccd] [--calib-images 200]
        [--per-conv] [--methods minmax percentile entropy]

For each checkpoint (a float detector trained by tools/train.py): ``float`` (the verified float ONNX
graph in ONNX Runtime), ``all_int8`` (every conv quantized, min/max calibration), ``stem_float``
(detkd's default: the first conv stays float), ``all_int8_<method>`` for every other calibration method,
and with ``--per-conv`` ``float_<conv>``: every conv quantized but that one (which single conv, kept
float, recovers the accuracy?). Calibration: the first ``--calib-images`` training images, letterboxed,
as ``tools/export.py --int8`` does. Accuracy only (no timing): it may share the CPU.

Rows are keyed by checkpoint and variant and resumable. Outputs: benchmarks/results/diagnose_int8.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
import torch

import detkd  # noqa: F401  (offline environment first)
from detkd.config import load_config
from detkd.data.sources import read_split
from detkd.engine.benchmark import count_params, machine_info
from detkd.engine.checkpoint import load_detector
from detkd.engine.evaluate import evaluate_model
from detkd.engine.results import ResultsFile, markdown_table, relative_path, write_markdown
from detkd.export.int8 import CALIBRATION_METHODS, OnnxRuntimeDetector, quantize_int8, stem_convs
from detkd.export.onnx import export_onnx, sample_images

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "diagnose_int8"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="float detector checkpoints")
    parser.add_argument("--config", default=str(REPO / "configs" / "train" / "fyolo_bccd.py"), help="the checkpoints' data config")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "bccd"), help="dataset root")
    parser.add_argument("--calib-images", type=int, default=200)
    parser.add_argument("--per-conv", action="store_true", help="also keep each conv float in turn")
    parser.add_argument("--methods", nargs="+", choices=CALIBRATION_METHODS, default=list(CALIBRATION_METHODS))
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    command = "python benchmarks/diagnostics/diagnose_int8.py " + " ".join(sys.argv[1:])
    results = ResultsFile(RESULTS / "diagnose_int8.json", machine_info(1), command)
    torch.set_num_threads(1)
    data = dict(load_config(args.config, {"data.root": args.data}).data)
    val, train = read_split(data, "val"), read_split(data, "train")
    for ckpt in args.checkpoints:
        detector = load_detector(ckpt).eval()
        imgsz = int(detector.imgsz)
        work = WORK / relative_path(ckpt, REPO).replace("/", "_").removesuffix(".pth")
        float_path = work / "float.onnx"
        if not float_path.is_file():  # written only after passing the parity gate, so an existing one is verified
            export_onnx(detector, float_path, imgsz, check_images=sample_images(val, imgsz, count=4))
        graph = onnx.load(float_path)
        convs, stem = [n.name for n in graph.graph.node if n.op_type == "Conv"], stem_convs(graph)
        variants: list[tuple[str, dict]] = [("float", {}), ("all_int8", dict(keep_stem_float=False)),
                                            ("stem_float", dict(keep_stem_float=True))]
        variants += [(f"all_int8_{m}", dict(keep_stem_float=False, calibration_method=m)) for m in args.methods if m != "minmax"]
        if args.per_conv:
            variants += [(f"float_{c}", dict(keep_stem_float=False, keep_float=[c])) for c in convs if c not in stem]
        calibration = None
        for variant, options in variants:
            key = dict(checkpoint=relative_path(ckpt, REPO), variant=variant, calibration_images=args.calib_images)
            if results.has(**key):
                continue
            if variant == "float":
                runtime_path = float_path
            else:
                if calibration is None:
                    calibration = sample_images(train, imgsz, count=args.calib_images)
                runtime_path = quantize_int8(float_path, work / f"{variant.replace('/', '_')}.onnx", calibration, **options)
            metrics, _ = evaluate_model(OnnxRuntimeDetector(runtime_path, detector, 1), val, batch_size=8, progress=False)
            floated = {"float": "every conv", "all_int8": "-", "stem_float": stem[0] if stem else "-"}.get(
                variant, ", ".join(options.get("keep_float", [])) or "-")
            row = dict(key, name=f"{key['checkpoint']}:{variant}", dataset=Path(args.data).name, imgsz=imgsz,
                       params=count_params(detector), flops=None, onnx_latency_ms=None, float_nodes=floated,
                       mAP50=metrics["AP50"], AP=metrics["AP"])
            results.add(row, key=("checkpoint", "variant", "calibration_images"))
            print(f"{row['name']}: mAP50 {row['mAP50']:.3f} AP {row['AP']:.3f}", flush=True)
    parts = []
    for ckpt in dict.fromkeys(r["checkpoint"] for r in results.rows):
        rows = [r for r in results.rows if r["checkpoint"] == ckpt]
        reference = next((r["mAP50"] for r in rows if r["variant"] == "float"), None)
        shown = [dict(r, variant=r["variant"].replace("/detector/", "").replace("/Conv", ""),
                      mAP50_vs_float=None if reference is None else r["mAP50"] - reference) for r in rows]
        parts.append(f"**{ckpt}** (val split, ONNX Runtime, {rows[0]['calibration_images']} calibration images; "
                     "`float_<conv>`: every conv INT8 but that one)\n\n" + markdown_table(shown, ["variant", "mAP50", "AP", "mAP50_vs_float"]))
    write_markdown(RESULTS / "diagnose_int8.md", "\n\n".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
