"""benchmarks/prune_ssd.py's report: points lost against each subject's unpruned model, and the targets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prune_ssd():
    spec = importlib.util.spec_from_file_location("prune_ssd_benchmark", REPO / "benchmarks" / "prune_ssd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(subject, method, mAP50, AP, param_ratio=1.0, speedup=1.0, retrained=True):
    return {"subject": subject, "variant": None if method == "unpruned" else "distill", "method": method, "ratio": 0.65,
            "retrained": retrained, "epochs": 10, "mAP50": mAP50, "AP": AP, "param_ratio": param_ratio, "speedup": speedup}


def test_losses_are_points_below_the_unpruned_model_of_the_same_subject(prune_ssd):
    rows = [_row("w0.5", "l1", 0.845, 0.52), _row("w0.25", "unpruned", 0.80, 0.50), _row("w0.5", "unpruned", 0.85, 0.50),
            _row("w0.25", "l1", 0.81, 0.40)]
    out = prune_ssd.with_losses(rows)
    assert [(r["subject"], r["method"]) for r in out] == [("w0.5", "unpruned"), ("w0.5", "l1"), ("w0.25", "unpruned"), ("w0.25", "l1")]
    assert out[1]["mAP50_loss"] == pytest.approx(0.5) and out[1]["AP_loss"] == pytest.approx(-2.0)  # 85.0 - 84.5; 50 - 52
    assert out[3]["mAP50_loss"] == pytest.approx(-1.0) and out[3]["AP_loss"] == pytest.approx(10.0)
    assert "mAP50_loss" not in out[0]


def test_targets_summary_needs_every_target(prune_ssd):
    rows = prune_ssd.with_losses([_row("w0.5", "unpruned", 0.85, 0.50),
                                  _row("w0.5", "l1", 0.845, 0.495, param_ratio=7.0, speedup=3.2),   # all met
                                  _row("w0.5", "taylor", 0.845, 0.48, param_ratio=7.0, speedup=3.2),  # AP -2.0
                                  _row("w0.5", "singh", 0.85, 0.50, param_ratio=6.6, speedup=3.2, retrained=False)])
    lines = [line for line in prune_ssd.targets_summary(rows).splitlines() if line.startswith("- ")]
    assert len(lines) == 2  # the row before retraining is not judged
    assert lines[0].endswith("all targets met**") and "AP -0.5 met" in lines[0]
    assert "AP -2.0 missed" in lines[1] and "all targets met" not in lines[1]
