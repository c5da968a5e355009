"""What training prints on the console: short by default, mmengine's full log with ``--verbose``.

mmengine logs the environment, the whole config, the hook table and one line every
``log_interval`` iterations; all of it always goes to the run's log file
(``<work_dir>/<timestamp>/<timestamp>.log``). On the console detkd shows, per stage, one line per
epoch (:class:`~detkd.engine.hooks.EpochSummaryHook`) and mmengine's warnings and errors; the tools'
``--verbose`` brings mmengine's console output back. The setting is per process, like
:func:`logging.basicConfig`: tools set it once from their arguments.
"""

from __future__ import annotations

import logging

__all__ = ["console_level", "set_verbose"]

_verbose = False


def set_verbose(verbose: bool) -> None:
    """Show mmengine's whole log on the console (``True``) or only warnings and errors (default)."""
    global _verbose
    _verbose = bool(verbose)


def console_level() -> int:
    """The level of mmengine's console handler: INFO when verbose, else WARNING."""
    return logging.INFO if _verbose else logging.WARNING
