#!/usr/bin/env python
"""Make a dataset for detkd. The one kind for now: ``synthetic``, the built-in shapes dataset (`python tools/make_dataset.py --help`; also `detkd make-dataset`).

The code is :mod:`detkd.commands.make_dataset`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.make_dataset import main

if __name__ == "__main__":
    sys.exit(main())
