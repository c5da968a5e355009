#!/usr/bin/env python
"""Check a detection dataset and list every defect by file (`python tools/check_dataset.py --help`; also `detkd check`).

The code is :mod:`detkd.commands.check_dataset`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.check_dataset import main

if __name__ == "__main__":
    sys.exit(main())
