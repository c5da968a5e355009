"""tools/train_distill.py end to end on tiny models: each teacher kind, unlabeled images, exact
resume, FitNets stages and a TAKD chain of three networks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkd.data.synthetic import generate_synthetic
from detkd.engine.checkpoint import load_checkpoint_file, load_detector

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_distill")
    counts = {"train": 12, "val": 6, "test": 0, "unlabeled": 8}
    generate_synthetic(root, seed=2, counts=counts, size=96, workers=1, progress=False)
    return root


def _options(data_root: Path, epochs: int, imgsz: int = 64) -> list[str]:
    return [f"data.root={data_root}", "data.generate=None", f"imgsz={imgsz}", "model.width=0.125",
            f"train.epochs={epochs}", "train.batch_size=4", "train.num_workers=1", "train.log_interval=1"]


def _run(tool: str, config: str, work_dir: Path, options: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "tools" / tool), str(REPO / "configs" / config), "--work-dir", str(work_dir),
           *extra, "--cfg-options", *options]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _scalars(work_dir: Path) -> list[dict]:
    files = sorted(work_dir.glob("2*/vis_data/scalars.json"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


@pytest.fixture(scope="module")
def yolo_teacher(tiny_data, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("teacher")
    _run("train.py", "train/yolov2_synthetic.py", work, _options(tiny_data, 1))
    return work / "epoch_1.pth"


def test_distillation_with_unlabeled_images_logs_terms_and_resumes_exactly(tiny_data, yolo_teacher, tmp_path):
    full = tmp_path / "full"
    opts = [*_options(tiny_data, 2), "unlabeled.ratio=0.5"]
    out = _run("train_distill.py", "distill/fyolo_synthetic.py", full, opts, "--teacher-ckpt", str(yolo_teacher)).stdout
    teacher_val = json.loads((full / "teacher_val.json").read_text())  # measured on val before training, kept after
    assert teacher_val["checkpoint"] == str(yolo_teacher) and 0.0 <= teacher_val["mAP50"] <= 1.0
    assert out.index(f"teacher: val mAP50 {teacher_val['mAP50']:.3f}") < out.index("epoch 1/2")
    from detkd.engine.run_state import RunState

    best = RunState(full).best_score()
    assert f"student: best val mAP50 {best:.3f}" in out
    assert ("warning: the student ends within 1 val mAP50 point of its teacher" in out) == (best >= teacher_val["mAP50"] - 0.01)
    student = load_detector(full / "epoch_2.pth")
    assert type(student).__name__ == "YoloDetector" and student.imgsz == 64
    state = load_checkpoint_file(full / "epoch_2.pth")["state_dict"]
    assert all(k.startswith("detector.") for k in state)  # no teacher weights in the student's checkpoint
    logged = _scalars(full)
    train_rows = [r for r in logged if "loss_kd_obj" in r]
    assert train_rows and {"loss_obj", "loss_noobj", "loss_cls", "loss_box", "loss_kd_cls", "loss_kd_box"} <= train_rows[0].keys()
    assert max(r["iter"] for r in train_rows) == 2 * 5  # (12 labeled + 6 unlabeled) / 4 per batch = 5 per epoch

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(full / "epoch_1.pth", resumed / "epoch_1.pth")
    (resumed / "last_checkpoint").write_text(str(resumed / "epoch_1.pth"))
    _run("train_distill.py", "distill/fyolo_synthetic.py", resumed, opts, "--teacher-ckpt", str(yolo_teacher), "--resume")
    a = load_checkpoint_file(full / "epoch_2.pth")["state_dict"]
    b = load_checkpoint_file(resumed / "epoch_2.pth")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed distillation diverged from the uninterrupted run"


@pytest.mark.parametrize("cached", [False, True], ids=["online", "cached"])
def test_fitnets_stages_then_distillation(tiny_data, yolo_teacher, tmp_path, cached):
    """Stage 1 always runs the teacher online (it reads its features); with teacher.cache=True stage 2 reads the cache."""
    opts = [*_options(tiny_data, 1), "hints.epochs=1", "unlabeled.ratio=0"]
    if cached:
        opts += ["teacher.cache=True", f"teacher.cache_dir={tmp_path / 'cache'}"]
    proc = _run("train_distill.py", "distill/fyolo_synthetic_hints.py", tmp_path, opts, "--teacher-ckpt", str(yolo_teacher))
    assert ("[teacher cache]" in proc.stdout) == cached
    assert len(list((tmp_path / "cache").glob("teacher_*.pt"))) == (1 if cached else 0)
    hint_rows = [r for r in _scalars(tmp_path / "hint_stage") if "loss" in r]
    assert hint_rows and all(set(k for k in r if k.startswith("loss")) == {"loss", "loss_hint_0"} for r in hint_rows)
    stage1 = load_checkpoint_file(tmp_path / "hint_stage" / "epoch_1.pth")["state_dict"]
    assert any(k.startswith("regressors.0.") for k in stage1)
    assert (tmp_path / "epoch_1.pth").is_file()
    assert "loss_kd_obj" in next(r for r in _scalars(tmp_path) if "loss" in r)


def test_stages_started_in_the_same_second_log_apart(tiny_data, yolo_teacher, tmp_path, monkeypatch):
    """mmengine names a run's logger and visualizer after its start second; two stages started in one
    second by one process must still log into their own folders."""
    import time

    from detkd.config import load_config
    from detkd.distill.runner import run_distill

    frozen = "20260101_000000"
    monkeypatch.setattr(time, "strftime", lambda fmt, t=None: frozen)  # every run starts "in the same second"
    options = {"data.root": str(tiny_data), "data.generate": None, "imgsz": 64, "model.width": 0.125, "train.epochs": 1,
               "train.batch_size": 4, "train.num_workers": 1, "train.log_interval": 1, "hints.epochs": 1,
               "unlabeled.ratio": 0, "teacher.checkpoint": str(yolo_teacher)}
    cfg = load_config(REPO / "configs" / "distill" / "fyolo_synthetic_hints.py", options)
    run_distill(cfg, tmp_path)
    hint_dir, student_dir = tmp_path / "hint_stage" / frozen, tmp_path / frozen
    hint_rows = [json.loads(x) for x in (hint_dir / "vis_data" / "scalars.json").read_text().splitlines()]
    student_rows = [json.loads(x) for x in (student_dir / "vis_data" / "scalars.json").read_text().splitlines()]
    assert hint_rows and all("loss_kd_obj" not in r for r in hint_rows)
    assert any("loss_kd_obj" in r for r in student_rows) and any("coco/AP50" in r for r in student_rows)
    assert len([r for r in hint_rows if "loss" in r]) == len([r for r in student_rows if "loss" in r]) == 3  # 12 images / 4
    hint_log, student_log = (hint_dir / f"{frozen}.log").read_text(), (student_dir / f"{frozen}.log").read_text()
    assert "loss_hint_0" in hint_log and "loss_kd_obj" not in hint_log
    assert "loss_kd_obj" in student_log and "loss_hint_0" not in student_log


def test_takd_chain_of_three_networks(tiny_data, yolo_teacher, tmp_path):
    opts = [*_options(tiny_data, 1), "chain.0.model.width=0.125", "unlabeled.ratio=0"]
    proc = _run("train_distill.py", "distill/fyolo_synthetic_takd.py", tmp_path, opts, "--teacher-ckpt", str(yolo_teacher))
    assistant_dir = tmp_path / "assistants" / "1_tiny075"
    assistant = load_detector(assistant_dir / "epoch_1.pth")
    student = load_detector(tmp_path / "epoch_1.pth")
    assert [len(list(m.parameters())) > 0 for m in (assistant, student)] == [True, True]
    assert assistant.neck.__class__.__name__ == "PlainNeck" and student.neck.__class__.__name__ == "StackingNeck"
    # the student's teacher was the assistant, recorded in the student's resolved config
    config = next(tmp_path.glob("2*/vis_data/config.py")).read_text()
    assert str(assistant_dir) in config
    assert "student checkpoint" in proc.stdout


def test_ssd_teacher_at_another_input_size(tiny_data, tmp_path):
    ssd_dir = tmp_path / "ssd"
    _run("train.py", "train/ssd_cpu_synthetic.py", ssd_dir, _options(tiny_data, 1, imgsz=128))
    ssd = next(ssd_dir.glob("epoch_1.pth"))
    opts = [*_options(tiny_data, 1), "unlabeled.ratio=0"]
    fail = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_distill.py"), str(REPO / "configs" / "distill" / "fyolo_synthetic.py"),
         "--work-dir", str(tmp_path / "bad"), "--teacher-ckpt", str(ssd), "--cfg-options", *opts],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert fail.returncode == 2 and "teacher.imgsz=128" in fail.stderr and "Traceback" not in fail.stderr
    _run("train_distill.py", "distill/fyolo_synthetic.py", tmp_path / "student", [*opts, "teacher.imgsz=128"],
         "--teacher-ckpt", str(ssd))
    assert load_detector(tmp_path / "student" / "epoch_1.pth").imgsz == 64


def test_ultralytics_teacher(tiny_data, tmp_path):
    opts = [*_options(tiny_data, 1), "unlabeled.ratio=0", "distill.hinton.weight=0.5", "teacher.allow_untrained=True"]
    _run("train_distill.py", "distill/fyolo_synthetic.py", tmp_path, opts, "--teacher-ckpt", "yolov8n.yaml")
    rows = [r for r in _scalars(tmp_path) if "loss_kd_obj" in r]
    assert rows and "loss_hinton" in rows[0]


def test_missing_teacher_is_a_clear_error(tiny_data, tmp_path):
    cmd = [sys.executable, str(REPO / "tools" / "train_distill.py"), str(REPO / "configs" / "distill" / "fyolo_synthetic.py"),
           "--work-dir", str(tmp_path), "--cfg-options", *_options(tiny_data, 1)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 2 and "--teacher-ckpt" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*cmd, "--teacher-ckpt", str(tmp_path / "nope.pth")], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 2 and "nope.pth: teacher checkpoint not found" in proc.stderr


def test_binarized_student_distilled_from_a_float_teacher(tiny_data, yolo_teacher, tmp_path):
    from detkd.binary.layers import BinaryConv2d

    opts = [*_options(tiny_data, 1), "unlabeled.ratio=0", "model.binary.mode=bnn", "model.binary.keep_1x1=False"]
    _run("train_distill.py", "distill/fyolo_synthetic.py", tmp_path, opts, "--teacher-ckpt", str(yolo_teacher))
    student = load_detector(tmp_path / "epoch_1.pth")
    binary = [m for m in student.modules() if isinstance(m, BinaryConv2d)]
    assert binary and all(m.mode == "bnn" for m in binary)
    assert all(float(m.weight.detach().abs().max()) <= 1.0 for m in binary)  # latent weights clipped after every step
