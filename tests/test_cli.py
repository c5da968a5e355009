"""The installed ``detkd`` command: the same entry points as the tools/ scripts."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from detkd.cli import main
from detkd.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]


def test_the_console_script_is_installed_with_the_package():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "detkd"]
    assert script.value == "detkd.cli:main"


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}" in out for name in COMMANDS) and "Check a detection dataset" in out


def test_unknown_command_is_exit_2(capsys):
    assert main(["trian"]) == 2 and "unknown command 'trian'" in capsys.readouterr().err


def test_a_command_runs_like_its_script(tmp_path):
    from tests.test_layouts import make_labelimg

    root = make_labelimg(tmp_path / "ds")
    via_cli = subprocess.run([sys.executable, "-m", "detkd.cli", "check", str(root)], capture_output=True, text=True, cwd=REPO)
    via_script = subprocess.run([sys.executable, "tools/check_dataset.py", str(root)], capture_output=True, text=True, cwd=REPO)
    assert via_cli.returncode == via_script.returncode == 0
    assert via_cli.stdout == via_script.stdout and "layout: labelimg" in via_cli.stdout
    usage = subprocess.run([sys.executable, "-m", "detkd.cli", "train", "--help"], capture_output=True, text=True, cwd=REPO)
    assert usage.stdout.startswith("usage: detkd train") and "--data PATH" in usage.stdout
