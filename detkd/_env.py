"""Process environment for offline, quiet runs.

ultralytics looks up DNS names at import, syncs analytics and may fetch fonts or pip-install
packages; albumentations checks PyPI for updates. detkd runs on machines without internet and in
CI, so every entry point (importing :mod:`detkd` is enough) sets these switches. Values the user
already exported win: we only fill in defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OFFLINE_ENV", "cache_dir", "configure_environment"]


def cache_dir() -> Path:
    """Return detkd's cache folder (``$DETKD_CACHE`` or ``$XDG_CACHE_HOME/detkd``), not created."""
    if env := os.environ.get("DETKD_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "detkd"


OFFLINE_ENV: dict[str, str] = {
    "YOLO_OFFLINE": "1",  # ultralytics: skip the DNS check at import and every online call
    "YOLO_AUTOINSTALL": "0",  # ultralytics: never pip-install missing packages at run time
    "YOLO_VERBOSE": "0",  # ultralytics: no banners on import
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations: no PyPI version check
    "MPLBACKEND": "Agg",  # matplotlib: render plots to files, no display needed
}


def configure_environment() -> None:
    """Set the offline/quiet defaults in ``os.environ`` (idempotent, never overrides the user)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    # ultralytics writes settings.json into its config dir; keep ours apart from a user's own.
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics"))
