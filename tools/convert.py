#!/usr/bin/env python
"""Convert a detection dataset between Pascal VOC, COCO JSON and YOLO-txt.

Any format is read into detkd's records (with the same checks as training: boxes outside the
image are clipped, zero-area boxes and unknown classes dropped, unusable images skipped, each
reported) and written in the target format. COCO output: image ids follow the split order (1..N),
category ids are 1..K in class order (COCO input keeps its own ids).

Examples:
    python tools/convert.py data/VOC2007 --to coco --split test --out data/VOC2007/annotations/instances_test.json
    python tools/convert.py data/mydata/data.yaml --to coco --split val --out val.json
    python tools/convert.py data/VOC2007 --to yolo --split train --out data/voc_yolo
"""

from __future__ import annotations

import argparse
import sys

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.data.records import DatasetError
from detkd.data.sources import FORMATS, read_index
from detkd.data.writers import write_coco, write_voc, write_yolo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="VOC root, COCO instances .json, or YOLO data.yaml (or its folder)")
    parser.add_argument("--from", dest="src_format", choices=FORMATS[:3], help="source format (default: detected)")
    parser.add_argument("--to", required=True, choices=("coco", "yolo", "voc"), help="target format")
    parser.add_argument("--out", required=True, help="COCO: output .json file; VOC/YOLO: output root folder")
    parser.add_argument("--split", help="split to convert (VOC split file / YOLO key); also names the output split")
    parser.add_argument("--img-dir", help="COCO source: image folder (default: guessed)")
    parser.add_argument("--classes", help="comma-separated class list (default: from the data)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        index = read_index(args.src, args.src_format, args.split, classes, args.img_dir, progress=True)
        index.require_usable()
        if args.to == "coco":
            out = write_coco(index, args.out, index.image_root)
        elif args.to == "yolo":
            out = write_yolo(index, args.out, args.split or "train")
        else:
            out = write_voc(index, args.out, args.split or "train")
    except (DatasetError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for defect in index.defects:
        print(f"warning: {defect}", file=sys.stderr)
    print(f"{len(index.records)} images, {index.num_boxes} boxes, {len(index.class_names)} classes -> {out}"
          + (f" ({len(index.defects)} defects, listed above)" if index.defects else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
