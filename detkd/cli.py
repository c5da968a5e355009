"""``detkd <command> [options]``: the installed command, one entry point for every tool.

``detkd train CFG --data PATH`` runs exactly what ``python tools/train.py CFG --data PATH`` runs (both
call :mod:`detkd.commands.train`'s ``main``); ``detkd <command> --help`` shows that tool's help.
"""

from __future__ import annotations

import importlib
import sys

from detkd.commands import COMMANDS

__all__ = ["main"]


def _summary(module: str) -> str:
    doc = importlib.import_module(f"detkd.commands.{module}").__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def usage() -> str:
    lines = ["usage: detkd <command> [options]   (detkd <command> --help for a command's options)", "", "commands:"]
    width = max(len(name) for name in COMMANDS)
    lines += [f"  {name:<{width}}  {_summary(module)}" for name, module in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: the command line) to the command's ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"detkd: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"detkd.commands.{COMMANDS[name]}")
    sys.argv = [f"detkd {name}", *rest]  # argparse's prog and the command recorded in results files
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
