#!/usr/bin/env python
"""Prune a trained SSD for real: fewer channels, a smaller ONNX file, measured speedup (`python tools/prune.py --help`; also `detkd prune`).

The code is :mod:`detkd.commands.prune`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.prune import main

if __name__ == "__main__":
    sys.exit(main())
