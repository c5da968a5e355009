"""Run state: best by recorded score, finished stages with their settings, refusals, crash cleanup,
file permissions and reproducible runs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkd.engine.run_state import RunState, best_checkpoint, describe_changes
from detkd.errors import CheckpointError, RunStateError
from detkd.fileio import TEMP_SUFFIX, atomic_write_json, remove_temp_files

REPO = Path(__file__).resolve().parents[1]
PARAMS = {"train": {"epochs": 3, "seed": 0}, "imgsz": 64}


def _fake_checkpoint(path: Path, best_score: float | None = None) -> Path:
    """An mmengine-style checkpoint whose message hub records ``best_score`` (as CheckpointHook does)."""
    info = {} if best_score is None else {"best_score": best_score}
    torch.save({"state_dict": {"w": torch.zeros(1)}, "message_hub": {"runtime_info": info}}, path)
    return path


def test_best_is_chosen_by_recorded_score_not_by_epoch(tmp_path):
    good = _fake_checkpoint(tmp_path / "best_coco_AP50_epoch_4.pth", 0.71)
    _fake_checkpoint(tmp_path / "best_coco_AP50_epoch_9.pth", 0.52)  # a stale or interrupted leftover, later but worse
    _fake_checkpoint(tmp_path / "epoch_9.pth")
    assert best_checkpoint(tmp_path) == good


def test_best_skips_unreadable_files_and_falls_back_to_the_latest(tmp_path):
    (tmp_path / "best_coco_AP50_epoch_5.pth").write_bytes(b"\x00garbage")
    _fake_checkpoint(tmp_path / "epoch_4.pth")
    last = _fake_checkpoint(tmp_path / "epoch_5.pth")
    with pytest.warns(UserWarning, match="skipped as best checkpoint"):
        assert best_checkpoint(tmp_path) == last
    with pytest.raises(CheckpointError, match="no checkpoint"):
        best_checkpoint(tmp_path / "empty")


def test_latest_follows_last_checkpoint_and_repairs_a_dangling_pointer(tmp_path):
    state = RunState(tmp_path)
    _fake_checkpoint(tmp_path / "epoch_1.pth")
    two = _fake_checkpoint(tmp_path / "epoch_2.pth")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "epoch_3.pth"))  # killed before epoch 3 was renamed
    assert state.latest() == two
    atomic_write_json(state.record_path, {"stage": "s", "params": PARAMS, "finished": False})
    assert state.begin("s", PARAMS, resume=True) is True
    assert (tmp_path / "last_checkpoint").read_text() == str(two)


def test_begin_refuses_other_runs_and_unfinished_ones_without_resume(tmp_path):
    state = RunState(tmp_path)
    assert state.begin("s", PARAMS, resume=False) is False  # a new folder
    _fake_checkpoint(tmp_path / "epoch_1.pth")
    with pytest.raises(RunStateError, match="holds an unfinished run; pass --resume to continue it, or a new --work-dir"):
        state.begin("s", PARAMS, resume=False)
    other = {**PARAMS, "imgsz": 96}
    with pytest.raises(RunStateError, match=r"holds a run with other settings \(imgsz 64 -> 96\); pass a new --work-dir"):
        state.begin("s", other, resume=True)
    longer = {**PARAMS, "train": {"epochs": 5, "seed": 0}}
    with pytest.raises(RunStateError, match="holds a run of 3 epochs; pass --resume to train it to 5"):
        state.begin("s", longer, resume=False)
    assert state.begin("s", longer, resume=True) is True
    state.finish()
    assert state.finished(longer) and not state.finished(PARAMS)
    with pytest.raises(RunStateError, match="holds a finished run with these settings"):
        state.begin("s", longer, resume=False)


def test_begin_refuses_checkpoints_of_an_unknown_run_and_replaces_a_failed_start(tmp_path):
    _fake_checkpoint(tmp_path / "epoch_7.pth")
    with pytest.raises(RunStateError, match="holds checkpoints of another run"):
        RunState(tmp_path).begin("s", PARAMS, resume=False)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    atomic_write_json(fresh / "run.json", {"stage": "s", "params": {"imgsz": 1}, "finished": False})
    assert RunState(fresh).begin("s", PARAMS, resume=False) is False  # no checkpoint yet: nothing to lose


def test_describe_changes_names_the_first_settings():
    assert describe_changes({"a": {"b": 1}, "c": 2}, {"a": {"b": 3}, "c": 2}) == "a.b 1 -> 3"
    assert describe_changes({"x": 1}, {"y": 1}) == "x 1 -> '<unset>', y '<unset>' -> 1"


def test_temp_files_of_an_interrupted_write_are_removed_and_only_ours(tmp_path):
    ours = tmp_path / "sub" / f".epoch_3.pth.abc123{TEMP_SUFFIX}"
    ours.parent.mkdir()
    ours.write_bytes(b"partial")
    theirs = tmp_path / ".someone-elses.tmp"
    theirs.write_bytes(b"keep")
    assert remove_temp_files(tmp_path) == [ours]
    assert theirs.is_file() and not ours.exists()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_the_umask_permissions(tmp_path, umask_022):
    from detkd.engine.checkpoint import save_detector
    from detkd.export.onnx import export_onnx
    from detkd.models.factory import build_model

    model = build_model("fyolo", class_names=["a", "b"], imgsz=64, width=0.125)
    paths = [atomic_write_json(tmp_path / "metrics.json", {"a": 1}), save_detector(model, tmp_path / "m.pth")]
    export_onnx(model, tmp_path / "m.onnx")
    paths.append(tmp_path / "m.onnx")
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_two_identical_fresh_runs_give_identical_checkpoints(tmp_path):
    """The seed is applied before the model, anchors and data are built."""
    from detkd.data.synthetic import generate_synthetic

    data = tmp_path / "data"
    generate_synthetic(data, seed=1, counts={"train": 8, "val": 4, "test": 0, "unlabeled": 0}, size=96, workers=1, progress=False)
    options = [f"data.root={data}", "data.generate=None", "imgsz=64", "model.width=0.125", "train.epochs=1",
               "train.batch_size=4", "train.num_workers=0"]
    for name in ("a", "b"):
        proc = subprocess.run([sys.executable, "tools/train.py", "configs/train/fyolo_synthetic.py", "--work-dir", str(tmp_path / name),
                               "--cfg-options", *options], capture_output=True, text=True, cwd=REPO, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (torch.load(tmp_path / n / "epoch_1.pth", weights_only=True)["state_dict"] for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
