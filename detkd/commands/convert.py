"""Convert a detection dataset between Pascal VOC, COCO JSON and YOLO-txt.

Any format is read into detkd's records (with the same checks as training: boxes outside the
image are clipped, zero-area boxes and unknown classes dropped, unusable images skipped, each
reported) and written in the target format. COCO output: image ids follow the split order (1..N),
category ids are 1..K in class order (COCO input keeps its own ids).

Where it writes: a VOC or YOLO --out folder must be new, empty, or one this tool made before (it
holds the stamp .detkd-converted.json; converting another split into it adds that split, converting
a split again replaces that split's files). Any other folder, a user's dataset say, is refused
with exit status 2 and nothing written. A COCO --out file may be new or one this tool wrote before;
replacing any other existing file needs --overwrite.

Examples:
    python tools/convert.py data/VOC2007 --to coco --split test --out data/VOC2007/annotations/instances_test.json
    python tools/convert.py data/mydata/data.yaml --to coco --split val --out val.json
    python tools/convert.py data/VOC2007 --to yolo --split train --out data/voc_yolo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.data.outdir import CONVERTED_STAMP, check_output_file, check_output_folder, clear_split, write_stamp
from detkd.data.records import DatasetError, DatasetIndex
from detkd.data.sources import FORMATS, read_index
from detkd.data.writers import write_coco, write_voc, write_yolo
from detkd.errors import add_debug_argument, run_tool

TOOL = "tools/convert.py"  # the "tool" of its stamp
COCO_PREFIX = b'{"info": {"description": "converted by detkd'  # how every COCO file detkd writes starts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="VOC root, COCO instances .json, or YOLO data.yaml (or its folder)")
    parser.add_argument("--from", dest="src_format", choices=FORMATS[:3], help="source format (default: detected)")
    parser.add_argument("--to", required=True, choices=("coco", "yolo", "voc"), help="target format")
    parser.add_argument("--out", required=True,
                        help="COCO: output .json file; VOC/YOLO: output root folder (new, empty, or made by this tool)")
    parser.add_argument("--split", help="split to convert (VOC split file / YOLO key); also names the output split")
    parser.add_argument("--img-dir", help="COCO source: image folder (default: guessed)")
    parser.add_argument("--classes", help="comma-separated class list (default: from the data)")
    parser.add_argument("--overwrite", action="store_true",
                        help="COCO: replace an existing --out file that this tool did not write (folders: never)")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def _check_target(args: argparse.Namespace) -> dict | None:
    """Refuse an output this tool may not write, before reading anything; the folder's stamp, if any."""
    out = Path(args.out)
    if args.to == "coco":
        check_output_file(out, COCO_PREFIX, TOOL, "--out", args.overwrite)
        return None
    stamp = check_output_folder(out, CONVERTED_STAMP, TOOL, TOOL, "--out")
    if stamp is not None and stamp.get("format") != args.to:
        raise DatasetError(f"{out} holds a {stamp.get('format')} conversion, not {args.to}; nothing was written. "
                           "Choose an empty or new folder (--out)")
    source = Path(args.src).resolve()
    if source == out.resolve() or out.resolve() in source.parents:
        raise DatasetError(f"{args.src} lies inside --out {out}; nothing was written. Choose another folder (--out)")
    return stamp


def _write(args: argparse.Namespace, index: DatasetIndex, stamp: dict | None) -> Path:
    """Write ``index`` in the target format; a folder is stamped first and its old copy of the split cleared."""
    if args.to == "coco":
        return write_coco(index, args.out, index.image_root)
    out, split = Path(args.out), args.split or "train"
    splits = sorted({*((stamp or {}).get("splits") or []), split})
    write_stamp(out, CONVERTED_STAMP, TOOL, {"format": args.to, "splits": splits})
    if stamp is not None and split in (stamp.get("splits") or []):
        clear_split(out, args.to, split)
    return (write_yolo if args.to == "yolo" else write_voc)(index, out, split)


def _convert(args: argparse.Namespace) -> int:
    """Check the target, read the source, write it; warnings for each defect, then a summary line."""
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    stamp = _check_target(args)
    try:
        index = read_index(args.src, args.src_format, args.split, classes, args.img_dir, progress=True)
        index.require_usable()
        out = _write(args, index, stamp)
    except (OSError, ValueError) as exc:  # unreadable files, a data.yaml with other class names
        raise DatasetError(str(exc)) from exc
    for defect in index.defects:
        print(f"warning: {defect}", file=sys.stderr)
    print(f"{len(index.records)} images, {index.num_boxes} boxes, {len(index.class_names)} classes -> {out}"
          + (f" ({len(index.defects)} defects, listed above)" if index.defects else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and convert; a detkd error is one ``error:`` line and exit status 2."""
    args = parse_args(argv)
    return run_tool(lambda: _convert(args), debug=args.debug)
