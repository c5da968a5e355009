#!/usr/bin/env python
"""Distil a trained teacher into a student detector (Mehta & Ozturk 2018 and classic KD terms) (`python tools/train_distill.py --help`; also `detkd distill`).

The code is :mod:`detkd.commands.train_distill`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.train_distill import main

if __name__ == "__main__":
    sys.exit(main())
