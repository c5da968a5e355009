"""detkd's one error type and its kinds, and the one place tools turn them into an exit status.

Every problem a user can cause or fix — bad data, a bad config value, an unloadable or unsafe
checkpoint, a teacher that does not fit, a work dir that holds another run — raises a
:class:`DetkdError` whose message is one line that names the file or key and the problem. Tools
call :func:`run_tool` once: it prints ``error: <message>`` and returns exit status 2 (``--debug``:
the traceback instead). Anything else is a bug in detkd and keeps its traceback.

This module is the lowest layer: it imports nothing from detkd.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DetkdError",
    "RunStateError",
    "TeacherError",
    "add_debug_argument",
    "run_tool",
]

EXIT_USER_ERROR = 2


class DetkdError(Exception):
    """A problem the user can fix; ``str(error)`` is the one-line message a tool prints."""


class DatasetError(DetkdError):
    """A dataset cannot be used at all (missing root, nothing usable left, bad class list), or a
    folder that is not ours to write into."""


class ConfigError(DetkdError, ValueError):
    """A config file, key or value that detkd cannot use (unknown key, wrong type, out of range)."""


class CheckpointError(DetkdError):
    """A checkpoint file is missing, unsafe without the trust flag, or does not fit the model."""


class TeacherError(DetkdError, ValueError):
    """A teacher that cannot be loaded, has no trained weights, or does not fit the student."""


class RunStateError(DetkdError):
    """A work dir that holds another run (or an unfinished one without ``--resume``)."""


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``--debug``: show the traceback of a detkd error instead of its one-line message."""
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback instead of one line")


def run_tool(body: Callable[[], int], debug: bool = False) -> int:
    """Run a tool's ``body``; a :class:`DetkdError` becomes ``error: <message>`` on stderr and exit
    status 2 (with ``debug``, it propagates with its traceback). Ctrl-C exits with 130, quietly."""
    try:
        return body()
    except DetkdError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr, flush=True)
        return 130
