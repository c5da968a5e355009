"""Every shipped training config loads, resolves its schedule, and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkd.config import load_config
from detkd.engine.runner import _schedulers, build_detector

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs" / "train").glob("*_*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path, {"train.epochs": 7})
    assert {"data", "imgsz", "model", "train", "optim_wrapper", "param_scheduler"} <= set(cfg.keys())
    assert cfg.data["format"] in {"voc", "coco", "yolo"} and "train" in cfg.data["splits"] and "val" in cfg.data["splits"]
    model_cfg = {k: v for k, v in cfg.model.items() if k not in ("anchors", "num_anchors")}  # k-means needs data
    detector = build_detector(model_cfg, ["a", "b"], int(cfg.imgsz), None)
    assert detector.class_names == ["a", "b"] and detector.imgsz == cfg.imgsz
    epoch_scheds = [s for s in _schedulers(cfg, 7) if s.get("by_epoch", True)]
    assert epoch_scheds and all(s["end"] == 7 for s in epoch_scheds)  # the schedule follows train.epochs


def test_step_schedule_base():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "_base_" / "schedules" / "sgd_step.py")
    assert cfg.param_scheduler[1]["milestones"] == [20, 27]
