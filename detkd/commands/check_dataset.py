"""Check a detection dataset and list every defect by file.

Examples:
    python tools/check_dataset.py ~/data/my-export          # any layout: every split it finds, each checked
    python tools/check_dataset.py data/VOC2007 --split trainval
    python tools/check_dataset.py annotations/instances_val2017.json --img-dir val2017 --json report.json
    python tools/check_dataset.py data/mydata/data.yaml --split val

Exit status: 0 when the dataset can be used (defects are listed, and training will skip, clip or
drop exactly what is listed), 1 with --strict when there is any defect, 2 when it cannot be used.
"""

from __future__ import annotations

import argparse

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.data.check import check_dataset, check_layout
from detkd.data.sources import FORMATS, detect_format
from detkd.errors import add_debug_argument, run_tool
from detkd.fileio import atomic_write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="VOC root, COCO instances .json, YOLO data.yaml (or its folder), or an image folder")
    parser.add_argument("--format", choices=FORMATS, help="dataset format (default: detected from PATH)")
    parser.add_argument("--split", help="VOC split file or YOLO split key (default: all VOC annotations / YOLO train)")
    parser.add_argument("--img-dir", help="COCO image folder (default: guessed next to the annotations folder)")
    parser.add_argument("--classes", help="comma-separated class list to enforce (VOC, COCO)")
    parser.add_argument("--json", metavar="OUT", help="also write the full report as JSON")
    parser.add_argument("--headers-only", action="store_true", help="read image headers only (faster; misses truncated images)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any defect is found")
    parser.add_argument("--max-lines", type=int, default=200, help="defect lines to print (all go to --json)")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_tool(lambda: check(args), args.debug)


def check(args: argparse.Namespace) -> int:
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    decode = not args.headers_only
    if not (args.split or args.format or args.img_dir or classes) and detect_format(args.path) != "folder":
        layout, reports = check_layout(args.path, decode)
        print(f"layout: {layout.format} at {layout.root}; splits found: "
              + ", ".join(f"{split} ({layout.found.get(split, '')})" for split in layout.splits) + "; read: all of them\n")
        for report in reports:
            print(report.to_text(args.max_lines) + "\n")
        payload: dict = {"layout": {"format": layout.format, "root": str(layout.root), "splits": layout.splits},
                         "splits": [r.to_dict() for r in reports]}
    else:
        reports = [check_dataset(args.path, args.format, args.split, args.img_dir, classes, decode=decode, progress=True)]
        print(reports[0].to_text(args.max_lines))
        payload = reports[0].to_dict()
    if args.json:
        atomic_write_json(args.json, payload)
        print(f"report written to {args.json}")
    if any(r.fatal for r in reports):
        return 2
    return 1 if args.strict and any(r.defects for r in reports) else 0
