#!/usr/bin/env python
"""detkd demo on the built-in synthetic dataset (what `make demo` runs).

Stages, each printed as it runs, outputs under --work-dir:
  1. generate the built-in dataset (VOC layout + COCO JSON + unlabeled folder), reused when the
     same parameters were generated before;
  2. check it with the dataset checker (the same checks training applies);
  3. convert its VOC val split to COCO JSON and confirm it matches the generator's own COCO file;
  4. evaluate a sanity detections file (ground truth perturbed like an imperfect detector) with
     COCO mAP and VOC AP, and write METRICS.json plus a markdown summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import detkd  # noqa: F401  (sets offline/quiet environment before other imports)
from detkd.data.check import check_dataset
from detkd.data.synthetic import generate_synthetic, perturb_detections
from detkd.data.voc import read_voc
from detkd.data.writers import coco_dict, write_coco
from detkd.engine.metrics import evaluate_detections, format_metrics_table
from detkd.fileio import atomic_write_json, atomic_write_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    parser.add_argument("--size", type=int, default=320, help="image size of the built-in dataset (default: %(default)s)")
    parser.add_argument("--train", type=int, default=600, help="training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=150, help="validation images (default: %(default)s)")
    parser.add_argument("--test", type=int, default=150, help="test images (default: %(default)s)")
    parser.add_argument("--unlabeled", type=int, default=300, help="unlabeled images (default: %(default)s)")
    return parser.parse_args(argv)


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def generate(args: argparse.Namespace, data_dir: Path) -> None:
    params = {"seed": args.seed, "size": args.size, "train": args.train, "val": args.val,
              "test": args.test, "unlabeled": args.unlabeled}
    stamp = data_dir / "params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        print(f"reusing {data_dir} (same parameters)")
        return
    start = time.perf_counter()
    counts = {k: params[k] for k in ("train", "val", "test", "unlabeled")}
    generate_synthetic(data_dir, seed=args.seed, counts=counts, size=args.size)
    atomic_write_json(stamp, params)  # written last: a half-generated folder is regenerated
    print(f"generated {sum(counts.values())} images in {time.perf_counter() - start:.1f} s -> {data_dir}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work_dir)
    data_dir = work / "data"
    stage("1/4 built-in dataset")
    generate(args, data_dir)

    stage("2/4 dataset check (train split)")
    report = check_dataset(data_dir, "voc", "train")
    print(report.to_text(max_defects=10))
    atomic_write_json(work / "check_train.json", report.to_dict())
    if report.fatal:
        return 2

    stage("3/4 VOC -> COCO conversion (val split)")
    val = read_voc(data_dir, "val")
    converted = write_coco(val, work / "val_from_voc.json", val.image_root)
    generated = json.loads((data_dir / "annotations" / "instances_val.json").read_text())
    same = all(coco_dict(val, val.image_root)[k] == generated[k] for k in ("images", "annotations", "categories"))
    print(f"{converted}: {len(val.records)} images, {val.num_boxes} boxes; identical to the generator's COCO file: {same}")
    if not same:
        print("error: converted annotations differ from the generated ones", file=sys.stderr)
        return 1

    stage("4/4 evaluation of a sanity detections file (perturbed ground truth)")
    dets = perturb_detections(generated, seed=args.seed)
    dets_file = atomic_write_json(work / "sanity_dets.json", dets, indent=None)
    metrics = evaluate_detections(converted, dets_file)
    atomic_write_json(work / "METRICS.json", metrics)
    table = format_metrics_table(metrics)
    atomic_write_text(work / "summary.md", f"# detkd demo\n\n{report.to_text(max_defects=10)}\n\n{table}\n")
    print(table)
    print(f"\nwritten: {work / 'METRICS.json'}, {work / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
