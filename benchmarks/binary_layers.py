#!/usr/bin/env python
"""One conv layer, float (PyTorch) vs detkd's bit-packed XNOR/popcount kernel, same run, same threads.

    python benchmarks/binary_layers.py [--threads 2] [--iters 50]

Shapes are the 3x3 convs of the F-YOLO student (width 0.5 and 1) at 320 px, batch 1: (C_in, C_out,
H=W). ``float_ms``: ``F.conv2d`` on float32 input (PyTorch's oneDNN path). ``binary_ms``: the whole
binary layer as deployed (:class:`~detkd.models.binary_deploy.PackedBinaryConv2d`, XNOR mode): sign +
pack the input, XNOR/popcount conv, K * alpha scaling and bias. ``kernel_ms``: the popcount conv alone
on pre-packed input. Medians of ``--iters`` runs after warm-up. Outputs:
benchmarks/results/binary_layers.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import detkd  # noqa: F401  (offline environment first)
from detkd.engine.benchmark import machine_info, time_fn
from detkd.engine.results import markdown_table, write_markdown
from detkd.fileio import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHAPES = [(16, 32, 160), (32, 64, 80), (64, 128, 40), (128, 256, 20), (256, 512, 10), (512, 256, 10),
          (64, 128, 80), (128, 256, 40), (256, 512, 20), (512, 1024, 10)]  # width 0.5, then width 1
COLUMNS = ["shape", "threads", "float_ms", "binary_ms", "kernel_ms", "speedup", "kernel_speedup"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from detkd.kernels import xnor_kernel
    from detkd.models.binary import BinaryConv2d
    from detkd.models.binary_deploy import PackedBinaryConv2d

    torch.set_num_threads(args.threads)
    kernel = xnor_kernel()
    rows = []
    for c_in, c_out, size in SHAPES:
        torch.manual_seed(0)
        conv = BinaryConv2d(c_in, c_out, 3, padding=1, bias=True, mode="xnor").eval()
        packed = PackedBinaryConv2d(conv)
        x = torch.randn(1, c_in, size, size)
        weight, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
        xp = kernel.pack_input(x, False)[0]
        with torch.no_grad():
            torch.testing.assert_close(packed(x), conv(x), rtol=1e-4, atol=1e-3)  # the same layer
            float_t = time_fn(lambda: F.conv2d(x, weight, bias, padding=1), 5, args.iters)
            binary_t = time_fn(lambda: packed(x), 5, args.iters)
            none = x.new_empty(0)
            kernel_t = time_fn(lambda: kernel.xnor_conv2d(xp, packed.packed_weight, c_in, 3, 3, 1, 1, 1, 1, 1, 1, none, packed.alpha, packed.bias), 5, args.iters)
        row = {"shape": f"{c_in}x{size}x{size} -> {c_out}, 3x3", "c_in": c_in, "c_out": c_out, "size": size,
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
