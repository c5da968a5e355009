#!/usr/bin/env python
"""detkd demo on the built-in dataset: the whole pipeline, as `make demo` runs it (`python tools/demo.py --help`; also `detkd demo`).

The code is :mod:`detkd.commands.demo`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.demo import main

if __name__ == "__main__":
    sys.exit(main())
