"""tools/train.py end to end on a tiny synthetic dataset: checkpoints, safe reload, exact resume, DDP."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkd.data.synthetic import DEFAULT_PRESET, PRESETS, generate_synthetic
from detkd.engine.checkpoint import load_checkpoint_file, load_detector

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "train" / "fyolo_synthetic.py"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_synth")
    generate_synthetic(root, seed=1, counts={"train": 12, "val": 6, "test": 0, "unlabeled": 0}, size=96, workers=1, progress=False)
    return root


def _options(data_root: Path, epochs: int = 2) -> list[str]:
    return [
        "--cfg-options", f"data.root={data_root}", "data.generate=None", "imgsz=64", "model.width=0.125",
        f"train.epochs={epochs}", "train.batch_size=4", "train.num_workers=1", "train.log_interval=1",
    ]


def _train(work_dir: Path, data_root: Path, *extra: str, launcher: list[str] | None = None,
           epochs: int = 2) -> subprocess.CompletedProcess[str]:
    cmd = [*(launcher or [sys.executable]), str(REPO / "tools" / "train.py"), str(CONFIG), "--work-dir", str(work_dir),
           *_options(data_root, epochs), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["state_dict"]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """One 2-epoch training run shared by the tests below (its work dir)."""
    work = tmp_path_factory.mktemp("full")
    _train(work, tiny_data)
    return work


def test_train_writes_checkpoints_logs_and_resumes_exactly(trained, tiny_data, tmp_path):
    full = trained
    for name in ("epoch_1.pth", "epoch_2.pth", "last_checkpoint", "metrics.json", "dets.json"):
        assert (full / name).exists(), name
    assert list(full.glob("best_coco_AP50_epoch_*.pth"))
    assert list(full.rglob("scalars.json")) and list(full.rglob("events.out.tfevents.*"))
    assert not list(full.glob("*.tmp"))  # atomic writes leave no temporaries
    metrics = json.loads((full / "metrics.json").read_text())
    assert {"AP", "AP50", "voc07_AP50", "voc_AP50", "per_class"} <= metrics.keys()

    # the checkpoint alone rebuilds the model (weights_only load, spec in meta)
    model = load_detector(full / "epoch_2.pth")
    assert model.imgsz == 64 and model.class_names == list(PRESETS[DEFAULT_PRESET].classes)

    # interrupted after epoch 1, then resumed: epoch 2 comes out identical
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(full / "epoch_1.pth", resumed / "epoch_1.pth")
    (resumed / "last_checkpoint").write_text(str(resumed / "epoch_1.pth"))
    _train(resumed, tiny_data, "--resume")
    a, b = _weights(full / "epoch_2.pth"), _weights(resumed / "epoch_2.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed training diverged from the uninterrupted run"


def test_ddp_two_gloo_processes_with_ema(tiny_data, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    # extra cfg-options first: they continue the --cfg-options list of _options()
    _train(tmp_path / "ddp", tiny_data, "train.ema=True", "--launcher", "pytorch", launcher=launcher)
    checkpoint = load_checkpoint_file(tmp_path / "ddp" / "epoch_2.pth")
    assert checkpoint["meta"]["detkd"]["model"]["name"] == "fyolo"
    assert "ema_state_dict" in checkpoint  # EMA weights are what state_dict holds; the raw ones are kept too
    assert load_detector(tmp_path / "ddp" / "epoch_2.pth").imgsz == 64
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["num_images"] == 6


def test_bad_config_or_data_path_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(tmp_path / "nope.py")], capture_output=True, text=True)
    assert proc.returncode == 2 and "nope.py: config file not found" in proc.stderr and "Traceback" not in proc.stderr
    proc = _tool("train.py", CONFIG, "--work-dir", tmp_path / "w", "--cfg-options", f"data.root={tmp_path / 'no_data'}", "data.generate=None")
    assert proc.returncode == 2 and "no_data: not a VOC dataset" in proc.stderr and "Traceback" not in proc.stderr


def _tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=600)


def test_eval_export_and_benchmark_tools_on_a_trained_checkpoint(trained, tiny_data, tmp_path):
    ckpt = trained / "epoch_2.pth"
    opts = ["--cfg-options", f"data.root={tiny_data}", "data.generate=None"]
    proc = _tool("eval.py", CONFIG, ckpt, "--out", tmp_path / "m.json", "--dets", tmp_path / "d.json", *opts)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 6
    assert isinstance(json.loads((tmp_path / "d.json").read_text()), list)

    proc = _tool("export.py", CONFIG, ckpt, "--out", tmp_path / "model.onnx", *opts)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime parity on 4 images" in proc.stdout and (tmp_path / "model.onnx").is_file()
    proc = _tool("export.py", CONFIG, ckpt, "--out", tmp_path / "model.int8.onnx", "--int8", "--calib-images", "6", *opts)
    assert proc.returncode == 0, proc.stderr
    assert "INT8, " in proc.stdout and "calibrated on 6 train images" in proc.stdout and "float detections found again" in proc.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]

    proc = _tool("benchmark.py", CONFIG, f"student={ckpt}", "--out-dir", tmp_path / "bench", "--iters", "2", "--threads", "1",
                 "--int8", "--calib-images", "4", *opts)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    row, int8 = report["rows"]
    assert report["machine"]["threads"] == 1 and row["name"] == "student" and row["precision"] == "float32"
    assert int8["name"] == "student:int8" and int8["precision"] == "int8" and int8["calibration_images"] == 4
    assert 0.0 <= int8["mAP50"] <= 1.0 and int8["onnx_latency_ms"] > 0 and int8["onnx_size_mb"] < row["onnx_size_mb"]
    for key in ("params", "flops", "mAP50", "AP", "onnx_latency_ms", "torch_latency_ms", "decode_ms"):
        assert key in row
    assert (tmp_path / "bench" / "benchmark.png").stat().st_size > 0


def test_binary_export_and_benchmark_deploy_to_openvino(trained, tiny_data, tmp_path):
    from detkd.engine.checkpoint import load_detector, save_detector
    from detkd.models.factory import build_model

    classes = list(load_detector(trained / "epoch_2.pth").class_names)
    torch.manual_seed(0)
    binary = build_model("fyolo", class_names=classes, imgsz=64, width=0.125, binary={"mode": "xnor"})
    ckpt = save_detector(binary, tmp_path / "binary.pth")
    opts = ["--cfg-options", f"data.root={tiny_data}", "data.generate=None"]
    proc = _tool("export.py", CONFIG, ckpt, "--out", tmp_path / "student.xml", "--binary", *opts)
    assert proc.returncode == 0, proc.stderr
    assert "OpenVINO IR" in proc.stdout and (tmp_path / "student.bin").is_file()
    assert 'type="BinaryConvolution"' in (tmp_path / "student.xml").read_text()
    proc = _tool("export.py", CONFIG, trained / "epoch_2.pth", "--out", tmp_path / "float.xml", "--binary", *opts)
    assert proc.returncode == 2 and "no binary convs" in proc.stderr and not (tmp_path / "float.xml").exists()
    proc = _tool("benchmark.py", CONFIG, f"binary={ckpt}", f"float={trained / 'epoch_2.pth'}", "--out-dir", tmp_path / "bench",
                 "--iters", "2", "--threads", "1", *opts)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads((tmp_path / "bench" / "benchmark.json").read_text())["rows"]}
    assert rows["binary"]["deployed_runtime"] == "openvino" and rows["binary"]["deployed_latency_ms"] > 0
    assert rows["float"]["deployed_runtime"] == "onnxruntime"
    assert rows["float"]["deployed_latency_ms"] == rows["float"]["onnx_latency_ms"]


def test_tools_refuse_unsafe_or_missing_checkpoints(tiny_data, tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"meta": {}, "state_dict": {}, "payload": argparse.Namespace(code="not data")}, evil)  # a pickled object
    opts = ["--cfg-options", f"data.root={tiny_data}", "data.generate=None"]
    proc = _tool("eval.py", CONFIG, evil, *opts)
    assert proc.returncode == 2 and "refused by the safe loader" in proc.stderr and "Traceback" not in proc.stderr
    proc = _tool("export.py", CONFIG, tmp_path / "missing.pth", "--out", tmp_path / "x.onnx", *opts)
    assert proc.returncode == 2 and "missing.pth: checkpoint file not found" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_console_shows_epoch_lines_and_the_log_file_the_rest(tiny_data, tmp_path):
    quiet = _train(tmp_path / "quiet", tiny_data, epochs=1).stdout
    lines = [line for line in quiet.splitlines() if line.strip()]
    data = [line for line in lines if line.startswith("[data] ")]  # the data summary, once, first
    assert lines[:len(data)] == data and data[0].startswith("[data] train: 12 of 12 images") and "classes:" in data[-1]
    assert len(lines) == len(data) + 1 and lines[-1].startswith("[quiet] epoch 1/1  loss ") and "val mAP50 " in lines[-1], quiet
    assert "Hooks will be executed" not in quiet and "Config:" not in quiet
    log = next((tmp_path / "quiet").glob("2*/2*.log")).read_text()
    assert "Hooks will be executed" in log and "Config:" in log  # the whole log is still written
    assert data[0] in log  # and the data summary
    loud = _train(tmp_path / "loud", tiny_data, "--verbose", epochs=1).stdout
    assert "Hooks will be executed" in loud and "Config:" in loud and "[loud] epoch 1/1" in loud
