"""Make a dataset for detkd. The one kind for now: ``synthetic``, the built-in shapes dataset.

Example::

    python tools/make_dataset.py synthetic --out work_dirs/shapes --seed 0 \\
        --train 1000 --val 200 --test 200 --unlabeled 200

writes VOC layout (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/``), COCO JSON
(``annotations/instances_<split>.json``), ``unlabeled/`` and ``classes.txt`` under ``--out``
(see :mod:`detkd.data.synthetic`), then prints a summary. ``--out`` must be new, empty, or a folder
this tool made before (it is then regenerated): any other folder is refused with exit status 2
and nothing written, so a real dataset is never mixed with synthetic files.
"""

from __future__ import annotations

import detkd  # noqa: F401  # first: sets the offline/quiet environment before third-party imports

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from detkd.data.records import DatasetIndex
from detkd.data.synthetic import DEFAULT_PRESET, LABELED_SPLITS, PRESETS, generate_synthetic
from detkd.errors import add_debug_argument, run_tool

__all__ = ["build_parser", "main", "summary"]


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _image_size(text: str) -> int:
    """argparse type: an image side of at least 32 pixels (smaller images hold no useful objects)."""
    value = _count(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"must be >= 32 pixels, got {value}")
    return value


def _workers(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    synth = kinds.add_parser("synthetic", help="procedurally drawn shapes (the built-in demo/test dataset)")
    synth.add_argument("--out", type=Path, required=True,
                       help="output folder: new, empty, or made by this tool before (then regenerated); "
                            "any other folder is refused")
    synth.add_argument("--seed", type=_count, default=0, help="random seed, >= 0 (default 0)")
    synth.add_argument("--train", type=_count, default=1000, help="training images (default 1000)")
    synth.add_argument("--val", type=_count, default=200, help="validation images (default 200)")
    synth.add_argument("--test", type=_count, default=200, help="test images (default 200)")
    synth.add_argument("--unlabeled", type=_count, default=200, help="unlabeled images (default 200)")
    synth.add_argument("--size", type=_image_size, default=320, help="nominal image side, >= 32 (default 320)")
    synth.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                       help="look of the images: 'standard' (learnable in minutes, the demo's) or 'hard' "
                            "(small, crowded, heavily textured objects) (default %(default)s)")
    synth.add_argument("--workers", type=_workers, default=2, help="worker processes (default 2)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_argument(synth)
    return parser


def summary(out: Path, indices: dict[str, DatasetIndex], unlabeled: int, seconds: float, preset: str = DEFAULT_PRESET) -> str:
    """One paragraph: images and boxes per split, boxes per class, time taken."""
    splits = ", ".join(
        f"{split} {len(indices[split].records)} images / {indices[split].num_boxes} boxes" for split in LABELED_SPLITS
    )
    totals: dict[str, int] = {}
    difficult = 0
    for index in indices.values():
        difficult += sum(int(r.difficult.sum()) for r in index.records)
        for name, n in index.class_histogram().items():
            totals[name] = totals.get(name, 0) + n
    per_class = ", ".join(f"{name} {n}" for name, n in totals.items())
    return (
        f"Wrote the synthetic dataset ({preset} preset) to {out}: {splits}, unlabeled {unlabeled} images. "
        f"Boxes per class: {per_class} ({difficult} flagged difficult). Took {seconds:.1f} s."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and generate; a detkd error is one ``error:`` line and exit status 2."""
    args = build_parser().parse_args(argv)
    return run_tool(lambda: _generate(args), debug=args.debug)


def _generate(args: argparse.Namespace) -> int:
    """Generate the dataset ``args`` describe and print the summary; exit status 0."""
    counts = {"train": args.train, "val": args.val, "test": args.test, "unlabeled": args.unlabeled}
    start = time.perf_counter()
    indices = generate_synthetic(
        args.out, args.seed, counts, size=args.size, workers=args.workers, progress=not args.no_progress,
        preset=args.preset,
    )
    print(summary(args.out, indices, args.unlabeled, time.perf_counter() - start, args.preset))
    return 0
