#!/usr/bin/env python
"""Export a trained detector to ONNX (dynamic batch) and verify it with onnxruntime (`python tools/export.py --help`; also `detkd export`).

The code is :mod:`detkd.commands.export`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
