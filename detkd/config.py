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
import ast
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config

from detkd.errors import ConfigError, add_debug_argument
from detkd.options import RunOptions, options_dict, parse_options

__all__ = ["DictAction", "add_data_argument", "add_run_arguments", "add_verbose_argument", "ensure_generated", "load_config", "parse_value",
           "run_options"]

SECTIONS = ("data", "imgsz", "train", "decode", "checkpoint", "teacher", "distill", "unlabeled", "hints", "chain", "prune")


def _split_top_level(text: str) -> list[str]:
    """``text`` split at commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def parse_value(text: str) -> Any:
    """A ``--cfg-options`` value: a Python literal (``3``, ``0.5``, ``'a b'``, ``[1, 2]``, ``{"a": 1}``),
    ``true``/``false``/``none`` in any case, ``a,b,c`` or ``[a, b]`` as a list of such values, else
    the text itself, spaces kept (``data.root=/my data/VOC``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    lowered = text.strip().lower()
    if lowered in ("true", "false", "none", "null"):
        return {"true": True, "false": False}.get(lowered)
    inner = text.strip()
    bracketed = len(inner) > 1 and inner[0] + inner[-1] in ("[]", "()")
    if bracketed or ("," in inner and len(_split_top_level(inner)) > 1):
        items = [parse_value(part.strip()) for part in _split_top_level(inner[1:-1] if bracketed else inner) if part.strip()]
        return tuple(items) if inner[0] == "(" and bracketed else items
    return text


class DictAction(argparse.Action):
    """``--cfg-options KEY=VALUE ...`` into ``{"KEY": value}`` (values by :func:`parse_value`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        options = dict(getattr(namespace, self.dest) or {})
        for item in [values] if isinstance(values, str) else list(values or []):
            key, sep, value = str(item).partition("=")
            if not sep or not key:
                parser.error(f"{option_string}: {item!r} is not KEY=VALUE")
            options[key.strip()] = parse_value(value)
        setattr(namespace, self.dest, options)


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data PATH``: train / evaluate on any dataset without writing a config."""
    parser.add_argument("--data", metavar="PATH",
                        help="the dataset, instead of the config's: a VOC root, a COCO JSON or export folder "
                             "(Roboflow, CVAT), a data.yaml or its folder, or labelImg folders (XML beside images); "
                             "classes and splits come from the data, 10%% of train validates when it has no val split")


def add_run_arguments(parser: argparse.ArgumentParser, options_example: str, resume_help: str) -> None:
    """The options every training tool shares: ``--data``, ``--work-dir``, ``--cfg-options``, ``--resume``,
    ``--launcher``, ``--verbose``, ``--debug``."""
    add_data_argument(parser)
    parser.add_argument("--work-dir", help="output folder (default: work_dirs/<config name>)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE",
                        help=f"override config values, e.g. {options_example}")
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                        help="'pytorch' under torchrun for multi-GPU / multi-node (gloo on CPU)")
    add_verbose_argument(parser)
    add_debug_argument(parser)


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: mmengine's whole log (config, hook table, iteration lines) on the console too;
    without it the console shows one line per epoch and the log file holds the rest."""
    parser.add_argument("--verbose", action="store_true",
                        help="print mmengine's full log (config dump, hook table, iteration lines) on the console; "
                             "it always goes to the run's log file")


def load_config(path: str | Path, options: dict[str, Any] | None = None, data: str | Path | None = None) -> Config:
    """Load a config file, take the dataset from ``data`` (``--data PATH``: any layout
    :func:`detkd.data.layouts.discover` finds; classes from the data, splits from its layout, a seeded
    hold-out when it has no val split), apply ``--cfg-options`` style overrides (``{"a.b": value}``) and check every
    section (:func:`detkd.options.parse_options`); the checked sections, every default filled in,
    replace the file's, so the run's resolved config shows what it ran with.

    Raises:
        ConfigError: a missing or unreadable config file, an unknown key, or a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as exc:  # mmengine re-raises the config's own SyntaxError, NameError, ImportError...
        raise ConfigError(f"{path}: cannot read the config: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if data is not None:  # --data: the dataset's own layout replaces the config's data section
        from detkd.data.layouts import discover

        cfg.data = discover(data).data_config()
    if options:
        try:
            cfg.merge_from_dict(options)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: --cfg-options {options}: {exc}") from exc
    opts = parse_options(cfg, str(path))
    for key in SECTIONS:
        if key != "data" or opts.data is not None:
            cfg[key] = options_dict(getattr(opts, key))
    return cfg


def run_options(cfg: Config | dict[str, Any]) -> RunOptions:
    """The typed options of a config (already checked by :func:`load_config`; cheap to read again)."""
    return parse_options(cfg)


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
