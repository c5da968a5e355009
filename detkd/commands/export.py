"""Export a trained detector to ONNX (dynamic batch) and verify it with onnxruntime.

    python tools/export.py CFG CKPT --out model.onnx [--imgsz N] [--split val]
    python tools/export.py CFG CKPT --out model.int8.onnx --int8 [--calib-images 200] [--calib-split train]
    python tools/export.py CFG BINARY_CKPT --out model.xml --binary

The graph maps ``images`` Float[B, 3, N, N] in [0, 1] (RGB, letterboxed) to the model's raw head
outputs; decoding + NMS run in Python, exactly as for PyTorch. Before reporting success the file
is run by onnxruntime on real images from the config's split and must give the same raw outputs
and detections as PyTorch. A checkpoint whose classes differ from the config's dataset is refused
before anything is exported. ``--int8``: the verified float graph is then quantized by ONNX Runtime's
static quantization (int8 weights per channel, uint8 activations calibrated on ``--calib-images``
letterboxed images of ``--calib-split``; :mod:`detkd.export.int8`) and ``--out`` is the INT8 model; its
drift from float (raw outputs, detections found again) is printed. ``--binary`` (a binarized model,
``model.binary``): ``--out`` is an OpenVINO IR (``.xml`` + ``.bin``) whose binary convs run on
OpenVINO's CPU BinaryConvolution with 1-bit weights and the rest in float (:mod:`detkd.export.openvino`),
verified against the float simulation like the ONNX export. Any failure writes nothing and ends with a one-line ``error: ...`` on
stderr and exit status 2 (``--debug``: the traceback instead).
"""

from __future__ import annotations

import detkd  # noqa: F401  # first: sets the offline environment before other third-party imports

import argparse
from pathlib import Path

from detkd.config import DictAction, add_data_argument
from detkd.errors import ConfigError, add_debug_argument, run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="training config (data for the parity check)")
    parser.add_argument("checkpoint", type=Path, help="detkd checkpoint (.pth)")
    parser.add_argument("--out", type=Path, required=True, help="output .onnx file (written atomically)")
    parser.add_argument("--imgsz", type=int, help="input size (default: the model's)")
    parser.add_argument("--split", default="val", help="split whose images drive the parity check (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--int8", action="store_true", help="write an INT8 model (ONNX Runtime static quantization)")
    parser.add_argument("--binary", action="store_true", help="write a binarized model as OpenVINO IR (.xml) on binary kernels")
    parser.add_argument("--calib-images", type=int, default=200, help="calibration images for --int8 (default: %(default)s)")
    parser.add_argument("--calib-split", default="train", help="split the calibration images come from (default: %(default)s)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE")
    add_data_argument(parser)
    parser.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in the checkpoint")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def export(args: argparse.Namespace) -> int:
    """The tool's work; every problem the user can fix raises a :class:`detkd.errors.DetkdError`."""
    from detkd.config import load_config
    from detkd.data.sources import read_split
    from detkd.engine.checkpoint import load_detector
    from detkd.engine.evaluate import check_classes
    from detkd.export.onnx import export_onnx, sample_images

    cfg = load_config(args.config, args.cfg_options, args.data)
    detector = load_detector(args.checkpoint, trust=args.trust)
    index = read_split(dict(cfg.data), args.split)
    check_classes(detector, index, str(args.checkpoint))  # as tools/eval.py: before anything is exported
    imgsz = args.imgsz or int(detector.imgsz)
    images = sample_images(index, imgsz, count=4)
    if args.binary and args.int8:
        raise ConfigError("--binary and --int8: choose one")
    if args.binary:
        from detkd.export.openvino import export_binary_ir

        report = export_binary_ir(detector, args.out, imgsz, check_images=images, opset=args.opset)
        size = (args.out.stat().st_size + args.out.with_suffix(".bin").stat().st_size) / 2**20
        print(f"exported {args.out} and {args.out.with_suffix('.bin').name} (OpenVINO IR, {size:.2f} MiB, binary convs on "
              f"BinaryConvolution, input 1x3x{imgsz}x{imgsz})")
        print(f"OpenVINO parity with the float simulation on {len(images)} images: {report}")
        return 0
    if args.int8:
        import tempfile

        from detkd.export.int8 import int8_parity, quantize_int8

        if args.calib_images < 1:
            raise ConfigError(f"--calib-images {args.calib_images}: needs at least 1")
        calibration = sample_images(read_split(dict(cfg.data), args.calib_split), imgsz, count=args.calib_images)
        with tempfile.TemporaryDirectory() as work:
            float_onnx = Path(work) / "float.onnx"
            report = export_onnx(detector, float_onnx, imgsz, args.opset, check_images=images)
            print(f"float graph verified by onnxruntime on {len(images)} images: {report}")
            quantize_int8(float_onnx, args.out, calibration)
        print(f"exported {args.out} (INT8, {args.out.stat().st_size / 2**20:.2f} MiB, calibrated on {len(calibration)} "
              f"{args.calib_split} images, input 1x3x{imgsz}x{imgsz}, dynamic batch)")
        print(f"INT8 vs float on {len(images)} {args.split} images: {int8_parity(detector, args.out, images)}")
        return 0
    report = export_onnx(detector, args.out, imgsz, args.opset, check_images=images)
    print(f"exported {args.out} ({args.out.stat().st_size / 2**20:.2f} MiB, input 1x3x{imgsz}x{imgsz}, dynamic batch)")
    print(f"onnxruntime parity on {len(images)} images: {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool(lambda: export(args), debug=args.debug)
