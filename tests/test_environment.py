"""Install and runtime environment: one OpenCV distribution, offline and quiet imports."""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path


def _owners_of(top_level: str) -> set[str]:
    owners = set()
    for dist in md.distributions():
        files = dist.files or []
        if any(str(f).split("/")[0] == top_level for f in files):
            owners.add(dist.metadata["Name"].lower())
    return owners


def test_exactly_one_distribution_owns_cv2():
    # Two owners (opencv-python + opencv-python-headless) share the cv2/ folder; uninstalling
    # either one then deletes files the other needs. We install the headless one only.
    assert _owners_of("cv2") == {"opencv-python-headless"}


def test_importing_detkd_sets_offline_defaults_without_overriding_the_user(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "YOLO_VERBOSE": "1"}
    for key in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "NO_ALBUMENTATIONS_UPDATE", "DETKD_CACHE"):
        env.pop(key, None)
    code = (
        "import os, detkd\n"
        "import ultralytics.utils as u\n"
        "print('@', os.environ['YOLO_OFFLINE'], os.environ['NO_ALBUMENTATIONS_UPDATE'], os.environ['YOLO_VERBOSE'])\n"
        "print('@', os.environ['YOLO_CONFIG_DIR'])\n"
        "print('@', u.is_online())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    # ultralytics prints its own lines when verbose; ours are the ones marked with '@'
    flags, config_dir, online = [ln[2:] for ln in out.stdout.splitlines() if ln.startswith("@ ")]
    assert flags == "1 1 1"  # the user's YOLO_VERBOSE=1 wins
    assert Path(config_dir) == tmp_path / "cache" / "detkd" / "ultralytics"
    assert online == "False"
    assert not (tmp_path / ".config" / "Ultralytics").exists()  # nothing written into the user's config
