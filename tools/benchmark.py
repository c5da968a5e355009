#!/usr/bin/env python
"""Compare detectors: accuracy, size, FLOPs and CPU latency (PyTorch eager and ONNX Runtime) (`python tools/benchmark.py --help`; also `detkd benchmark`).

The code is :mod:`detkd.commands.benchmark`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
