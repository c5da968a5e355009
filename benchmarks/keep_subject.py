#!/usr/bin/env python
"""Keep a trained benchmark model in the repository: its weights (no optimizer state) and how it was made.

    python benchmarks/keep_subject.py CKPT --name ssd_cpu_w0.5_bccd --trained-by "python tools/train.py ..."
    python benchmarks/keep_subject.py RUN/weights/best.pt --trust --name yolov8s_bccd_30ep --trained-by "..."

Training a benchmark's teacher or pruning subject takes an hour or more on a 2-core CPU, and
``benchmarks/work/`` (ignored by git) does not outlive the machine it was made on. This writes the
checkpoint's detector as ``benchmarks/subjects/<name>.pth`` (:func:`detkd.engine.checkpoint.save_detector`:
weights and detkd spec, loadable with ``weights_only=True``, a third of a training checkpoint's size) and
records in ``benchmarks/subjects/subjects.json`` its file hash, its model label, the source checkpoint, the
command that trained it (``--trained-by``) and the run's resolved settings (its ``run.json``, where there is one). Benchmarks name rows by the
kept file's hash (:func:`detkd.engine.checkpoint.checkpoint_model_label`), so every later row of that
subject is comparable with the earlier ones. An existing subject of that name is never replaced.

An ultralytics ``.pt`` (a pickle: ``--trust`` says you trust it, e.g. a run this repository's benchmark made) is kept
as data only (:func:`detkd.models.ultralytics_adapter.save_ultralytics_weights`: yaml, class names, fp16 tensors,
training arguments; read with ``weights_only=True``), labelled ``<model>@<hash of the kept file>`` and recorded with
``kind: ultralytics`` and its run's ``args.yaml``; ``benchmarks/distill_ablation.py`` restores the peers' YOLOv8s
from it instead of training one again, and names rows from it, or from the trained file it was kept from, by that label.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from common import REPO, SUBJECTS

import detkd  # noqa: F401  (offline environment first)
from detkd.errors import CheckpointError
from detkd.engine.checkpoint import checkpoint_model_label, load_detector, save_detector
from detkd.fileio import atomic_write_json, file_sha256



def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a detkd checkpoint (e.g. a run's best_*.pth)")
    parser.add_argument("--name", required=True, help="file name under benchmarks/subjects/ (without .pth)")
    parser.add_argument("--trained-by", required=True, help="the command that trained it (recorded as it is)")
    parser.add_argument("--trust", action="store_true",
                        help="CHECKPOINT is an ultralytics .pt (a pickle: loading it can run code) that you trust")
    return parser.parse_args()


def run_settings(checkpoint: Path) -> dict | None:
    """The resolved settings recorded in the run folder of ``checkpoint`` (``run.json``), if any."""
    record = checkpoint.parent / "run.json"
    return json.loads(record.read_text()).get("params") if record.is_file() else None


def keep(checkpoint: Path, name: str, trained_by: str, trust: bool = False, subjects: Path | None = None) -> dict:
    """Write ``subjects/<name>.pth`` from ``checkpoint`` and record it in ``subjects/subjects.json``; returns the
    entry. Raises FileExistsError when that subject exists (kept subjects are never replaced) and
    PermissionError for an ultralytics ``.pt`` without ``trust``. ``subjects``: the folder (default
    ``benchmarks/subjects/``)."""
    subjects = subjects or SUBJECTS
    target = subjects / f"{name}.pth"
    if target.exists():
        raise FileExistsError(f"{target} exists already; pick another --name (kept subjects are never replaced)")
    ultralytics = checkpoint.suffix == ".pt"
    if ultralytics:
        from detkd.models.ultralytics_adapter import save_ultralytics_weights, ultralytics_run_args

        if not trust:
            raise PermissionError(f"{checkpoint} is an ultralytics .pt, a Python pickle that can run code when loaded; "
                                  "pass --trust if you trust it")
        settings = ultralytics_run_args(checkpoint) or None  # None: no args.yaml beside weights/
        save_ultralytics_weights(checkpoint, target, trust=True)
        model = Path(str((settings or {}).get("model", "ultralytics"))).stem
        label = f"{model}@{file_sha256(target)[:8]}"
    else:
        save_detector(load_detector(checkpoint), target)
        settings, label = run_settings(checkpoint), checkpoint_model_label(target, file_hash=True)
    index = subjects / "subjects.json"
    entries = json.loads(index.read_text()) if index.is_file() else {}
    entries[name] = {
        "file": str(target.relative_to(REPO)) if target.is_relative_to(REPO) else str(target), "sha256": file_sha256(target),
        "label": label, "kind": "ultralytics" if ultralytics else "detkd",
        "source": str(checkpoint), "source_sha256": file_sha256(checkpoint),
        "trained_by": trained_by, "run_settings": settings,
        "kept": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(index, entries)
    return entries[name]


def main() -> int:
    args = parse_args()
    try:
        entry = keep(args.checkpoint, args.name, args.trained_by, args.trust)
    except (FileExistsError, PermissionError, CheckpointError) as exc:  # one line naming the file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = REPO / entry["file"]
    print(f"{target} ({target.stat().st_size / 2**20:.1f} MiB): {entry['label']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
