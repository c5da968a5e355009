"""What the benchmark scripts share: paths, the shared datasets, the subprocess runner, recipes and kept subjects.

Benchmarks run from a ``git worktree`` pinned to a commit (benchmarks/README.md), so a long run keeps the code it
started with: :func:`run` starts every training subprocess on *this* checkout's ``detkd`` (``PYTHONPATH``), not on
whatever an editable install points at.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work"
SUBJECTS = REPO / "benchmarks" / "subjects"  # kept models (benchmarks/keep_subject.py) and their index
SHARED_DATA = REPO.parent / "shared" / "data"  # the real datasets beside the repository (never copied into it)
DATA_ROOTS = {"bccd": SHARED_DATA / "bccd", "voc_subset": SHARED_DATA / "voc2012_subset"}


def child_env() -> dict[str, str]:
    """The environment of a benchmark's subprocess: this checkout's ``detkd`` first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run(cmd: list[str], quiet: bool = True) -> None:
    """Run ``cmd`` in the repository (printed first, as a shell line); its stdout is dropped when ``quiet``.

    Raises:
        SystemExit: the command failed (its exit status and the command).
    """
    print("$", shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL if quiet else None)
    if done.returncode:
        raise SystemExit(f"exit {done.returncode}: {shlex.join(cmd)}")


def python(script: str, *args: str) -> list[str]:
    """A command line running a repository script with this interpreter."""
    return [sys.executable, script, *args]


def recipe_id(path: str | Path) -> str:
    """``<path>@<commit>``: a recipe config and the commit that last changed it (12 hex digits).

    Raises:
        SystemExit: the file has changes git has not committed, or was never committed: test-split rows are
            computed only from recipes fixed (committed) before them.
    """
    rel = Path(path).resolve().relative_to(REPO)
    status = subprocess.run(["git", "status", "--porcelain", "--", str(rel)], cwd=REPO, capture_output=True, text=True)
    commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", str(rel)], cwd=REPO, capture_output=True, text=True)
    if status.returncode or commit.returncode:
        raise SystemExit(f"{rel}: not in a git checkout; a recipe must be a committed config")
    if status.stdout.strip() or not commit.stdout.strip():
        raise SystemExit(f"{rel}: the recipe has uncommitted changes; commit it before computing its test rows")
    return f"{rel}@{commit.stdout.strip()[:12]}"


def kept_subjects(subjects: Path | None = None) -> dict[str, dict[str, Any]]:
    """The index of the models kept in the repository (``benchmarks/subjects/subjects.json``, or in ``subjects``), by
    name; {} without one."""
    index = (subjects or SUBJECTS) / "subjects.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def kept_subject(name: str) -> Path | None:
    """A kept model's file, after checking its hash against its entry; None when there is no such subject.

    Raises:
        SystemExit: the file differs from the one recorded.
    """
    from detkd.fileio import file_sha256

    entry = kept_subjects().get(name)
    if entry is None:
        return None
    path = REPO / entry["file"]
    if not path.is_file() or file_sha256(path) != entry["sha256"]:
        raise SystemExit(f"{path}: missing, or its SHA-256 is not the one benchmarks/subjects/subjects.json records")
    return path
