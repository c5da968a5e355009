"""The tools' code: one module per command, each with ``main(argv) -> exit status``.

``tools/<name>.py`` (the documented scripts) and the ``detkd <command>`` entry point
(:mod:`detkd.cli`) both call these ``main`` functions. This is the top layer: it may import
everything below it.
"""

import shlex
import sys

__all__ = ["COMMANDS", "command_line"]


def command_line() -> str:
    """How this process was started, for results files: ``python tools/x.py ...`` or ``detkd x ...``."""
    argv = list(sys.argv)
    if argv and argv[0].startswith("detkd "):  # set by detkd.cli: "detkd <command>"
        return " ".join([argv[0], shlex.join(argv[1:])]).strip()
    return "python " + shlex.join(argv)


COMMANDS: dict[str, str] = {
    "train": "train",
    "distill": "train_distill",
    "prune": "prune",
    "eval": "eval",
    "export": "export",
    "benchmark": "benchmark",
    "check": "check_dataset",
    "convert": "convert",
    "make-dataset": "make_dataset",
    "demo": "demo",
}
"""``detkd <command>`` -> module of :mod:`detkd.commands` (the same name as its ``tools/`` script)."""
