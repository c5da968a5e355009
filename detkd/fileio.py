"""Atomic file output: write to a temporary file in the target folder, then rename over the target.

A crash, a full disk or Ctrl-C while writing never leaves a half-written checkpoint, results file
or annotation behind: readers see the old file or the new one, never a mix. Temporary files are
named ``.<target name>.<random>.detkd-tmp`` (:data:`TEMP_SUFFIX`), so that after a kill -9 the next
detkd run in that folder finds and removes them (:func:`remove_temp_files`), and the renamed file
gets the permissions any new file gets under the process's umask (``mkstemp`` alone gives 0600).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMP_SUFFIX", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "file_sha256", "new_file_mode",
           "remove_temp_files"]

TEMP_SUFFIX = ".detkd-tmp"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_file_mode() -> int:
    """``0o666`` minus the process's umask: the mode ``open(path, "w")`` would give a new file.

    Linux reports the umask in ``/proc/self/status``; elsewhere it can only be read by setting it and
    putting it back, which another thread creating a file at that moment (a log writer) could see.
    """
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("Umask:"))
        mask = int(line.split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def remove_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files an interrupted atomic write left in ``folder`` and below (only
    detkd's: ``.*.detkd-tmp``); returns what was removed."""
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for path in root.rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, fsync it, then rename it to ``path``.

    Parent folders are created. On any exception the temporary file is removed and ``path`` is
    left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fchmod(handle.fileno(), new_file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON (non-finite floats are refused, as JSON has no NaN)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
