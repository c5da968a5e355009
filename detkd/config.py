"""Configs (mmengine ``Config``, pure-Python files with real imports) and what they build.

A training config holds data only:

- ``data``: ``format`` (voc, coco, yolo), ``root``, ``splits`` (``{"train": ..., "val": ...}``:
  a VOC split name, a YOLO split key, or for COCO ``{"ann": file, "img_dir": folder}``),
  ``classes`` (None: from the data) and optionally ``generate`` (parameters of the built-in
  synthetic dataset, generated into ``root`` when it is missing).
- ``imgsz``, ``model`` (``name`` of a registered builder + its keyword arguments),
  ``train`` (epochs, batch size, workers, seed, augmentation, EMA, AMP), ``optim_wrapper``,
  ``param_scheduler``, ``decode``, ``checkpoint``.

Relative paths are relative to the working directory (the repository root for the shipped
configs); override any value with ``--cfg-options data.root=/path/to/VOC2007``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmengine.config import Config, DictAction

from detkd.data.records import DatasetError, DatasetIndex
from detkd.data.sources import guess_coco_image_dir

__all__ = ["DictAction", "add_run_arguments", "add_verbose_argument", "ensure_generated", "load_config", "read_split"]


def add_run_arguments(parser: argparse.ArgumentParser, options_example: str, resume_help: str) -> None:
    """The options every training tool shares: ``--work-dir``, ``--cfg-options``, ``--resume``, ``--launcher``,
    ``--verbose``."""
    parser.add_argument("--work-dir", help="output folder (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE",
                        help=f"override config values, e.g. {options_example}")
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                        help="'pytorch' under torchrun for multi-GPU / multi-node (gloo on CPU)")
    add_verbose_argument(parser)


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: mmengine's whole log (config, hook table, iteration lines) on the console too;
    without it the console shows one line per epoch and the log file holds the rest."""
    parser.add_argument("--verbose", action="store_true",
                        help="print mmengine's full log (config dump, hook table, iteration lines) on the console; "
                             "it always goes to the run's log file")


def load_config(path: str | Path, options: dict[str, Any] | None = None) -> Config:
    """Load a config file and apply ``--cfg-options`` style overrides (``{"a.b": value}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    cfg = Config.fromfile(str(path))
    if options:
        cfg.merge_from_dict(options)
    return cfg


def ensure_generated(data: dict[str, Any]) -> None:
    """Generate the built-in dataset into ``data["root"]`` if the config asks for it and it is missing."""
    params = data.get("generate")
    if not params:
        return
    root = Path(data["root"])
    stamp = root / "params.json"
    wanted = {k: params[k] for k in sorted(params)}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return
    from detkd.data.synthetic import DEFAULT_PRESET, generate_synthetic  # only when needed: drawing code
    from detkd.fileio import atomic_write_json

    counts = {k: int(params.get(k, 0)) for k in ("train", "val", "test", "unlabeled")}
    generate_synthetic(root, seed=int(params.get("seed", 0)), counts=counts, size=int(params.get("size", 320)),
                       preset=str(params.get("preset") or DEFAULT_PRESET))
    atomic_write_json(stamp, wanted)  # last, so an interrupted generation is redone


def read_split(data: dict[str, Any], split: str, check: str = "header") -> DatasetIndex:
    """Read the config's ``split`` (``train``, ``val`` or ``test``) into a :class:`DatasetIndex`."""
    from detkd.data.coco import read_coco
    from detkd.data.voc import read_voc
    from detkd.data.yolo_txt import read_yolo

    splits = data.get("splits") or {}
    if split not in splits:
        raise DatasetError(f"config data.splits has no '{split}' entry (has: {', '.join(splits) or 'none'})")
    root, entry, classes = Path(data["root"]), splits[split], data.get("classes")
    fmt = data.get("format", "voc")
    if fmt == "voc":
        return read_voc(root, entry, classes, check)
    if fmt == "coco":
        ann = root / entry["ann"]
        img_dir = root / entry["img_dir"] if entry.get("img_dir") else guess_coco_image_dir(ann)
        return read_coco(ann, img_dir, classes, check)
    if fmt == "yolo":
        return read_yolo(root, entry, check)
    raise DatasetError(f"config data.format must be voc, coco or yolo, not {fmt!r}")
