"""Is this file a ``torch.save`` checkpoint at all? Judged from its bytes, before anything is
unpickled, so an empty, truncated or foreign file gets a one-line message naming it instead of
torch's (or ultralytics') own. Used by :mod:`detkd.engine.checkpoint` and the ultralytics adapter."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from detkd.errors import CheckpointError

__all__ = ["check_torch_file", "load_error_reason", "one_line"]

_ZIP_MAGIC = b"PK"
_PICKLE_PROTO = 0x80  # pickle's PROTO opcode: how torch's legacy (non-zip) format begins
_MAX_DETAIL = 160


def one_line(text: str) -> str:
    """``text`` as one short line (torch's messages span many lines and can be long)."""
    line = " ".join(text.split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "..."


def _not_a_checkpoint(path: Path) -> str | None:
    """Why the file at ``path`` cannot be a ``torch.save`` file, from its bytes alone; None when it
    could be one (a zip archive with a ``data.pkl`` record, or a pickle)."""
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        return "empty file"
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return "truncated or damaged zip archive"
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"damaged zip archive: {one_line(str(exc))}"
        if not any(name.endswith("/data.pkl") for name in names):
            shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            return f"a zip archive without a data.pkl record: {shown or 'empty'}"
        return None
    if head[0] != _PICKLE_PROTO:
        return "neither a zip archive nor a pickle"
    return None


def check_torch_file(path: str | os.PathLike[str]) -> Path:
    """``path`` when it is a file that could be a ``torch.save`` checkpoint (judged from its bytes
    alone, nothing unpickled).

    Raises:
        CheckpointError: missing, unreadable, empty, a truncated or foreign zip archive, or neither a
            zip archive nor a pickle (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        problem = _not_a_checkpoint(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from exc
    if problem:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({problem})")
    return path


def load_error_reason(exc: Exception) -> str:
    """The informative part of torch's (long, multi-line) loading error, as one short line."""
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
    if detail:
        text = detail.group(1)
    if isinstance(exc, EOFError):
        return "the file ends early (truncated?)"
    text = one_line(text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
