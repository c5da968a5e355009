#!/usr/bin/env python
"""Train a detector from a config on mmengine's Runner (`python tools/train.py --help`; also `detkd train`).

The code is :mod:`detkd.commands.train`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
