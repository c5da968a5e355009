"""Output folders detkd writes datasets into: new or empty ones, or ones it made itself.

The synthetic generator and ``tools/convert.py`` never write into a folder they did not create,
so a user's dataset can never be mixed with generated or converted files or lose its split lists.
Each writer owns a *stamp*, a hidden JSON file at the root of every folder it makes:

* ``.detkd-generated.json``: :func:`detkd.data.synthetic.generate_synthetic` (its arguments).
* ``.detkd-converted.json``: ``tools/convert.py`` (target format and the splits written).

Before writing anything, a writer calls :func:`check_output_folder`: a missing or empty folder is
free, a folder holding the writer's stamp is its own (returned, so the writer can clear its earlier
output), and anything else raises :class:`~detkd.errors.DatasetError` with nothing written. The
writer then writes its stamp (:func:`write_stamp`) first of all, so even an interrupted run leaves
a folder it can recognise and redo.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detkd.errors import DatasetError
from detkd.fileio import atomic_write_json

__all__ = [
    "CONVERTED_STAMP",
    "GENERATED_STAMP",
    "check_output_file",
    "check_output_folder",
    "clear_split",
    "read_stamp",
    "refusal",
    "write_stamp",
]

GENERATED_STAMP = ".detkd-generated.json"
CONVERTED_STAMP = ".detkd-converted.json"


def read_stamp(folder: Path, stamp_name: str, tool: str) -> dict[str, Any] | None:
    """The stamp ``folder/stamp_name`` when it is a JSON object written by ``tool``, else None."""
    path = Path(folder) / stamp_name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == tool else None


def write_stamp(folder: Path, stamp_name: str, tool: str, content: dict[str, Any]) -> Path:
    """Write ``{"tool": tool, **content}`` as ``folder/stamp_name`` (creating ``folder``)."""
    return atomic_write_json(Path(folder) / stamp_name, {"tool": tool, **content})


def refusal(folder: Path, owner: str, option: str) -> DatasetError:
    """The one-line error for a folder that is not ``owner``'s to write into."""
    return DatasetError(
        f"{folder} is not empty and was not made by {owner}; nothing was written. "
        f"Choose an empty or new folder ({option})"
    )


def check_output_folder(
    folder: Path,
    stamp_name: str,
    tool: str,
    owner: str,
    option: str,
    recognise: Callable[[Path], dict[str, Any] | None] | None = None,
) -> dict[str, Any] | None:
    """Whether ``tool`` may write into ``folder``; writes nothing.

    Args:
        folder: the output folder.
        stamp_name, tool: the writer's stamp file name and the ``"tool"`` value it holds.
        owner, option: how the refusal names the writer and the option that picks the folder.
        recognise: for a non-empty folder without a stamp, a check that it is the writer's own
            output all the same (made before stamps existed); returns a stand-in stamp or None.

    Returns:
        None for a missing or empty folder, else the writer's stamp found in it.

    Raises:
        DatasetError: ``folder`` is a file, or is not empty and not the writer's own.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder} is a file, not a folder; nothing was written. Choose a new folder ({option})")
    if not folder.exists() or not any(folder.iterdir()):
        return None
    stamp = read_stamp(folder, stamp_name, tool)
    if stamp is None and recognise is not None:
        stamp = recognise(folder)
    if stamp is None:
        raise refusal(folder, owner, option)
    return stamp


def check_output_file(path: Path, own_prefix: bytes, owner: str, option: str, overwrite: bool) -> None:
    """Whether a writer may write the file ``path``; writes nothing.

    A new file is free; an existing one is the writer's own when it starts with ``own_prefix``
    (e.g. the COCO header ``tools/convert.py`` writes), and anyone else's is replaced only with
    ``overwrite``.

    Raises:
        DatasetError: ``path`` is a folder, or an existing file not the writer's without ``overwrite``.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; nothing was written. Give a file name ({option})")
    if not path.exists() or overwrite:
        return
    with path.open("rb") as handle:
        if handle.read(len(own_prefix)) == own_prefix:
            return
    raise DatasetError(
        f"{path} exists and was not written by {owner}; nothing was written. "
        f"Choose another file ({option}) or pass --overwrite to replace it"
    )


def clear_split(folder: Path, fmt: str, split: str) -> list[Path]:
    """Remove the files an earlier conversion wrote for ``split`` into ``folder`` (a folder whose
    stamp says so; the caller checks): YOLO ``images/<split>/`` and ``labels/<split>/``; VOC the
    XMLs and images of the ids in ``ImageSets/Main/<split>.txt`` that no other split file lists,
    and that file. Returns what was removed."""
    folder = Path(folder)
    if fmt == "yolo":
        stale = [p for sub in ("images", "labels") for p in sorted((folder / sub / split).rglob("*")) if p.is_file()]
    else:
        lists = folder / "ImageSets" / "Main"
        ids = _listed_ids(lists / f"{split}.txt")
        for other in sorted(lists.glob("*.txt")):
            if other.stem != split:
                ids -= _listed_ids(other)
        images = folder / "JPEGImages"
        stale = [p for p in sorted(images.iterdir()) if p.stem in ids] if images.is_dir() else []
        stale += [folder / "Annotations" / f"{i}.xml" for i in sorted(ids)] + [lists / f"{split}.txt"]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _listed_ids(split_file: Path) -> set[str]:
    """First token of every line of a VOC split file (empty for a missing file)."""
    if not split_file.is_file():
        return set()
    return {line.split()[0] for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()}
