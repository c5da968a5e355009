"""tools/demo.py end to end with tiny models: every stage runs, the console stays short, the table,
plot, ONNX files and per-run logs are written, and a rerun reuses the finished stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--teacher-epochs", "1", "--imgsz", "64", "--width", "0.125", "--teacher-width", "0.125",
        "--threads", "1"]


def _demo(work: Path, data: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "tools" / "demo.py"), "--work-dir", str(work), "--data-root", str(data), *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_demo_pipeline_smoke(tmp_path):
    work, data = tmp_path / "demo", tmp_path / "data"
    out = _demo(work, data).stdout
    for title in ("1/7", "2/7", "3/7", "4/7", "5/7", "6/7", "7/7", "== results"):
        assert f"== {title}" in out or title in out, title
    assert "Hooks will be executed" not in out and "Config:" not in out  # mmengine's tables stay in the log files
    epoch_lines = [line for line in out.splitlines() if " epoch 1/1 " in line]
    assert [line.split("]")[0] for line in epoch_lines] == ["[teacher", "[distilled/student", "[labels_only"]
    assert len(out.splitlines()) < 60, out  # short: no per-iteration lines
    table = out[out.index("== results"):]
    assert "| name | params | flops | mAP50 | AP | onnx_latency_ms | speedup |" in table
    assert all(f"| {name} |" in table for name in ("teacher", "student_distilled", "student_labels_only"))
    assert "mAP50 points over the same student" in table and f"written: {work / 'results.md'}" in table

    rows = json.loads((work / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["teacher", "student_distilled", "student_labels_only"]
    assert all(0.0 <= r["mAP50"] <= 1.0 and r["onnx_latency_ms"] > 0 and r["seed"] == 0 for r in rows)
    assert all(r["split"] == "test" and r["selected_on"] == "val" for r in rows)
    timing = rows[0]["timing"]  # one measurement, the three graphs in turn: every speedup is a ratio of its rounds
    assert all(r["timing"]["run"] == timing["run"] and r["onnx_latency_ms"] == timing["ms"][r["name"]] for r in rows)
    rounds = timing["rounds_ms"]
    for r in rows[1:]:
        ratios = sorted(t / s for s, t in zip(rounds[r["name"]], rounds["teacher"], strict=True))
        assert r["speedup"] == ratios[len(ratios) // 2]  # the median of 5 rounds' ratios
    assert (work / "results.png").read_bytes()[:4] == b"\x89PNG" and (work / "results.md").is_file()
    assert all((work / f"{r['name']}.onnx").is_file() for r in rows)
    for run in ("teacher", "student_distilled", "student_labels_only"):
        assert len(list((work / run).glob("2*/2*.log"))) == 1, run  # one run, one log of its own

    again = _demo(work, data).stdout  # everything finished: no training, the same table
    assert " epoch 1/1 " not in again and "| student_distilled |" in again
