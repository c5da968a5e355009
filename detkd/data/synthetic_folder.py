"""The synthetic generator's output folder: which files it writes, and its claim on the folder.

:func:`prepare_output` runs before :func:`detkd.data.synthetic.generate_synthetic` writes anything.
It refuses a folder that is not empty and was not made by the generator (a user's dataset, say),
so generated images, XMLs and split lists are never mixed into it; see :mod:`detkd.data.outdir`.
A folder the generator made (it holds the stamp ``.detkd-generated.json``, or, from before stamps
existed, nothing but files with the generator's names and a ``classes.txt``) is cleared of the
generator's earlier files, and only those, then stamped again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from detkd.data.outdir import GENERATED_STAMP, check_output_folder, write_stamp

__all__ = ["GENERATOR", "LABELED_SPLITS", "UNLABELED", "generated_files", "image_path", "prepare_output"]

GENERATOR = "detkd.data.synthetic"  # the "tool" of its stamp
LABELED_SPLITS: tuple[str, ...] = ("train", "val", "test")
UNLABELED = "unlabeled"
PARAMS_FILE = "params.json"  # written next to the data by detkd.config.ensure_generated
_OWNER, _OPTION = "detkd's generator", "data.root / --out"
_SPLIT = "(?:train|val|test)"
_OWN_NAME = re.compile(
    rf"JPEGImages/{_SPLIT}_\d{{6}}\.jpg|Annotations/{_SPLIT}_\d{{6}}\.xml|ImageSets/Main/{_SPLIT}\.txt"
    rf"|annotations/instances_{_SPLIT}\.json|unlabeled/unlabeled_\d{{6}}\.jpg|classes\.txt|{re.escape(PARAMS_FILE)}"
)
_FOLDERS = ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets", "annotations", "unlabeled")  # deepest first
_TEMP_NAME = re.compile(r"\.(.+)\.[A-Za-z0-9_]+\.(?:detkd-)?tmp")  # an interrupted atomic write's file


def image_path(out: Path, split: str, index: int) -> Path:
    """Where image ``index`` of ``split`` is written under ``out``."""
    if split == UNLABELED:
        return out / "unlabeled" / f"unlabeled_{index:06d}.jpg"
    return out / "JPEGImages" / f"{split}_{index:06d}.jpg"


def generated_files(counts: Mapping[str, int]) -> list[str]:
    """Paths (relative, POSIX) of every file :func:`generate_synthetic` writes for ``counts``."""
    files = []
    for split in LABELED_SPLITS:
        for i in range(int(counts.get(split, 0))):
            stem = image_path(Path(), split, i).stem
            files += [f"JPEGImages/{stem}.jpg", f"Annotations/{stem}.xml"]
        files += [f"ImageSets/Main/{split}.txt", f"annotations/instances_{split}.json"]
    files += [image_path(Path(), UNLABELED, i).as_posix() for i in range(int(counts.get(UNLABELED, 0)))]
    return [*files, "classes.txt"]


def _target(relative: str) -> str:
    """The file an interrupted atomic write was writing (``a/.b.jpg.x1y2.tmp`` -> ``a/b.jpg``), else itself."""
    folder, _, name = relative.rpartition("/")
    match = _TEMP_NAME.fullmatch(name)
    return f"{folder}/{match.group(1)}".lstrip("/") if match else relative


def _files(folder: Path) -> list[tuple[Path, str]]:
    """Every file under ``folder`` with its target name relative to ``folder``, in path order."""
    return [(p, _target(p.relative_to(folder).as_posix())) for p in sorted(folder.rglob("*")) if p.is_file()]


def _recognise_unstamped(folder: Path) -> dict[str, Any] | None:
    """A stand-in stamp for a folder the generator made before it wrote stamps: ``classes.txt`` and
    otherwise only files with the generator's names (and ``params.json``). None for anything else."""
    if not (folder / "classes.txt").is_file():
        return None
    if all(_OWN_NAME.fullmatch(name) for _, name in _files(folder)):
        return {"tool": GENERATOR}
    return None


def _previous_files(folder: Path, stamp: Mapping[str, Any]) -> list[Path]:
    """The files of the generator's earlier run in ``folder``: those its stamp's counts name (any
    file with the generator's names when the stamp has no counts), ``params.json`` and leftovers."""
    counts = stamp.get("counts")
    if isinstance(counts, dict) and all(isinstance(n, int) for n in counts.values()):
        own = {*generated_files(counts), PARAMS_FILE}
        return [path for path, name in _files(folder) if name in own]
    return [path for path, name in _files(folder) if _OWN_NAME.fullmatch(name)]


def prepare_output(out: Path, params: dict[str, Any]) -> None:
    """Claim ``out`` for a generation with ``params`` (seed, counts, size, preset).

    A missing or empty folder is stamped; a folder the generator made before loses the files of
    its earlier run (only those, and its sub-folders they leave empty) and is stamped again. The
    stamp is written before any image, so an interrupted generation leaves a folder that the next
    one recognises and redoes.

    Raises:
        DatasetError: ``out`` is not empty and was not made by the generator (nothing is written).
    """
    out = Path(out)
    previous = check_output_folder(out, GENERATED_STAMP, GENERATOR, _OWNER, _OPTION, _recognise_unstamped)
    if previous is not None:
        for path in _previous_files(out, previous):
            path.unlink(missing_ok=True)
        for folder in _FOLDERS:  # the generator's own sub-folders, once its files are gone from them
            if (out / folder).is_dir() and not any((out / folder).iterdir()):
                (out / folder).rmdir()
    write_stamp(out, GENERATED_STAMP, GENERATOR, params)
