#!/usr/bin/env python
"""Convert a detection dataset between Pascal VOC, COCO JSON and YOLO-txt (`python tools/convert.py --help`; also `detkd convert`).

The code is :mod:`detkd.commands.convert`; this script and the ``detkd`` command call the same ``main``.
"""

import sys

from detkd.commands.convert import main

if __name__ == "__main__":
    sys.exit(main())
