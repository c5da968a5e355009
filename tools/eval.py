#!/usr/bin/env python
"""Evaluate: a trained model on a dataset split, or a detections file against COCO ground truth (`python tools/eval.py --help`; also `detkd eval`).

The code is :mod:`detkd.commands.eval`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.eval import main

if __name__ == "__main__":
    sys.exit(main())
