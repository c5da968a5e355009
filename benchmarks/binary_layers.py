#!/usr/bin/env python
"""One conv layer, float (PyTorch) vs detkd's bit-packed XNOR/popcount kernel, same run, same threads.

    python benchmarks/binary_layers.py [--threads 2] [--iters 50]

Shapes: every conv that ``binary=dict(mode="xnor")`` binarizes in the F-YOLO student at width 0.5 and 1,
320 px, batch 1, as the model runs them (input channels and size, output channels, kernel). ``float_ms``: ``F.conv2d`` on float32 input (PyTorch's oneDNN path). ``binary_ms``: the whole
binary layer as deployed (:class:`~detkd.binary.packing.PackedBinaryConv2d`, XNOR mode): sign +
pack the input, XNOR/popcount conv, K * alpha scaling and bias. ``kernel_ms``: the popcount conv alone
on pre-packed input. Medians of ``--iters`` runs after warm-up. Outputs:
benchmarks/results/binary_layers.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import REPO, RESULTS

import detkd  # noqa: F401  (offline environment first)
from detkd.engine.benchmark import machine_info, time_fn
from detkd.engine.results import markdown_table, write_markdown
from detkd.fileio import atomic_write_json



def student_shapes(width: float, imgsz: int = 320) -> list[tuple[int, int, int, int, int]]:
    """``(C_in, C_out, kernel, padding, H)`` of each binary conv of F-YOLO at ``width``, in forward order."""
    import torch

    from detkd.binary.layers import BinaryConv2d
    from detkd.models.factory import build_model

    model = build_model("fyolo", class_names=["a", "b", "c"], imgsz=imgsz, width=width, binary={"mode": "xnor"}).eval()
    seen: list[tuple[int, int, int, int, int]] = []

    def hook(module, inputs, _output):
        shape = (module.in_channels, module.out_channels, module.kernel_size[0], module.padding[0], int(inputs[0].shape[-1]))
        if shape not in seen:
            seen.append(shape)

    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, imgsz, imgsz))
    return seen
COLUMNS = ["width", "shape", "threads", "float_ms", "binary_ms", "kernel_ms", "speedup", "kernel_speedup"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from detkd.binary.kernels import xnor_kernel
    from detkd.binary.layers import BinaryConv2d
    from detkd.binary.packing import PackedBinaryConv2d

    torch.set_num_threads(args.threads)
    kernel = xnor_kernel()
    rows = []
    for width, (c_in, c_out, k, pad, size) in [(w, s) for w in (0.5, 1.0) for s in student_shapes(w)]:
        torch.manual_seed(0)
        conv = BinaryConv2d(c_in, c_out, k, padding=pad, bias=True, mode="xnor").eval()
        packed = PackedBinaryConv2d(conv)
        x = torch.randn(1, c_in, size, size)
        weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
        xp = kernel.pack_input(x, False)[0]
        with torch.no_grad():
            torch.testing.assert_close(packed(x), conv(x), rtol=1e-4, atol=1e-3)  # the same layer
            float_t = time_fn(lambda: F.conv2d(x, weight, bias, padding=pad), 5, args.iters)
            binary_t = time_fn(lambda: packed(x), 5, args.iters)
            none = x.new_empty(0)
            kernel_t = time_fn(lambda: kernel.xnor_conv2d(xp, packed.packed_weight, c_in, k, k, 1, 1, pad, pad, 1, 1, none, packed.alpha, packed.bias), 5, args.iters)
        row = {"shape": f"{c_in}x{size}x{size} -> {c_out}, {k}x{k}", "width": width, "c_in": c_in, "c_out": c_out, "kernel": k, "size": size,
               "threads": args.threads, "float_ms": float_t.median_ms, "binary_ms": binary_t.median_ms,
               "kernel_ms": kernel_t.median_ms, "speedup": float_t.median_ms / binary_t.median_ms,
               "kernel_speedup": float_t.median_ms / kernel_t.median_ms}
        rows.append(row)
        print(f"{row['shape']}: float {row['float_ms']:.3f} ms, binary {row['binary_ms']:.3f} ms ({row['speedup']:.1f}x), "
              f"kernel {row['kernel_ms']:.3f} ms", flush=True)
    command = "python benchmarks/binary_layers.py " + " ".join(sys.argv[1:])
    machine = machine_info(args.threads)
    atomic_write_json(RESULTS / "binary_layers.json", {"machine": machine, "command": command.strip(), "rows": rows})
    note = (f"Batch 1, float32, median of {args.iters} runs, {args.threads} threads, {machine['cpu']}, torch {machine['torch']}. "
            "`binary_ms` is the whole deployed layer (input sign+pack, XNOR/popcount, K*alpha, bias); `kernel_ms` the popcount conv alone.\n\n")
    write_markdown(RESULTS / "binary_layers.md", note + markdown_table(rows, COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
