"""kill -9 at random points of a training run, including during checkpoint saves, then --resume:
training continues from the right epoch, every checkpoint left loads, no temporary file is left,
and the best checkpoint is the best by its recorded score."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detkd.engine.checkpoint import load_checkpoint_file
from detkd.engine.run_state import RunState, _recorded_score
from detkd.fileio import TEMP_SUFFIX

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 30

pytestmark = pytest.mark.slow


def _command(data: Path, work: Path) -> list[str]:
    return [sys.executable, "tools/train.py", "configs/train/fyolo_synthetic.py", "--work-dir", str(work), "--resume",
            "--cfg-options", f"data.root={data}", "data.generate=None", "imgsz=64", "model.width=0.125", f"train.epochs={EPOCHS}",
            "train.batch_size=4", "train.num_workers=0", "checkpoint.max_keep=2"]


def _start(data: Path, work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(_command(data, work), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _kill_during_a_save(proc: subprocess.Popen[str], work: Path, limit: float) -> bool:
    """SIGKILL the run as soon as a temporary checkpoint file appears (a save in progress)."""
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if any(work.glob(f".*{TEMP_SUFFIX}")):
            os.killpg(proc.pid, signal.SIGKILL)
            return True
        time.sleep(0.0005)
    return False


def test_kill_nine_loop_then_resume(tmp_path):
    from detkd.data.synthetic import generate_synthetic

    data, work = tmp_path / "data", tmp_path / "work"
    generate_synthetic(data, seed=3, counts={"train": 128, "val": 8, "test": 0, "unlabeled": 0}, size=96, workers=1, progress=False)
    rng, during_saves, kills = random.Random(0), 0, 0
    for attempt in range(6):
        proc = _start(data, work)
        if attempt % 2:
            during_saves += _kill_during_a_save(proc, work, limit=60.0)
        else:
            time.sleep(rng.uniform(6.0, 14.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate()
        if RunState(work).finished():
            break
    assert during_saves >= 1 and kills >= 3, (during_saves, kills)  # a resume after every kind of kill
    latest = RunState(work).latest()
    done = int(re.search(r"epoch_(\d+)", latest.name).group(1)) if latest else 0
    final = subprocess.run(_command(data, work), cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert final.returncode == 0, final.stderr[-3000:]
    epochs = [int(m) for m in re.findall(rf"epoch (\d+)/{EPOCHS}", final.stdout)]
    assert epochs == list(range(done + 1, EPOCHS + 1))  # continues after the last complete checkpoint
    state = RunState(work)
    assert state.finished() and (work / f"epoch_{EPOCHS}.pth").is_file()
    assert not list(work.rglob(f"*{TEMP_SUFFIX}"))
    checkpoints = list(work.glob("*.pth"))
    for path in checkpoints:
        load_checkpoint_file(path)  # every remaining checkpoint loads
    bests = [p for p in checkpoints if p.name.startswith("best_")]
    assert bests and state.best() == max(bests, key=lambda p: _recorded_score(p) or -1.0)
