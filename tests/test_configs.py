"""Every shipped training config loads, resolves its schedule, and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from detkd.config import load_config
from detkd.engine.runner import _schedulers, build_detector

PRESETS = {"fyolo", "yolov2", "tiny_yolov2", "ssd_cpu"}  # model + schedule, no data: used with --data
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs" / "train").glob("*_*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path, {"train.epochs": 7})
    assert {"imgsz", "model", "train", "optim_wrapper", "param_scheduler"} <= set(cfg.keys())
    if path.stem not in PRESETS:  # a preset's data comes from --data
        assert cfg.data["format"] in {"voc", "coco", "yolo"} and "train" in cfg.data["splits"] and "val" in cfg.data["splits"]
    model_cfg = {k: v for k, v in cfg.model.items() if k not in ("anchors", "num_anchors")}  # k-means needs data
    detector = build_detector(model_cfg, ["a", "b"], int(cfg.imgsz), None)
    assert detector.class_names == ["a", "b"] and detector.imgsz == cfg.imgsz
    epoch_scheds = [s for s in _schedulers(cfg, 7) if s.get("by_epoch", True)]
    assert epoch_scheds and all(s["end"] == 7 for s in epoch_scheds)  # the schedule follows train.epochs


def test_step_schedule_base():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "_base_" / "schedules" / "sgd_step.py")
    assert cfg.param_scheduler[1]["milestones"] == [20, 27]


DISTILL = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs" / "distill").glob("*_*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", DISTILL, ids=[p.stem for p in DISTILL])
def test_distill_config_builds(path, tmp_path):
    from detkd.distill.distiller import DistillConfig
    from detkd.distill.runner import plan_stages
    from detkd.distill.taps import FeatureTaps
    from detkd.models.factory import build_model

    cfg = load_config(path, {"train.epochs": 7})
    assert {"teacher", "distill", "unlabeled", "hints", "chain"} <= set(cfg.keys())
    DistillConfig.from_dict(cfg.distill)
    stages = plan_stages(cfg, tmp_path)
    assert stages[-1].name == "student" and stages[-1].work_dir == tmp_path
    assert len(stages) == (len(cfg.chain) + 1) * (2 if cfg.hints["taps"] else 1)
    for tap in cfg.hints["taps"]:  # hint layers name real modules of the student and the dataset's teacher
        student = build_model(cfg.model["name"], class_names=["a"], imgsz=int(cfg.imgsz), width=0.125, anchors=None)
        teacher_name = "ssd_cpu" if "bccd" in path.stem else "yolov2"
        teacher = build_model(teacher_name, class_names=["a"], imgsz=int(cfg.imgsz), width=0.125)
        FeatureTaps(student, [tap["student"]]).remove()
        FeatureTaps(teacher, [tap["teacher"]]).remove()


PRUNE = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs" / "prune").glob("*_*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", PRUNE, ids=[p.stem for p in PRUNE])
def test_prune_config_builds(path):
    from detkd.prune.groups import resolve_layer_set
    from detkd.options import PruneOptions

    cfg = load_config(path)
    opts = PruneOptions.from_dict(cfg.prune)
    assert opts.stages[-1] == "report" and {"imgsz", "model", "train", "optim_wrapper"} <= set(cfg.keys())
    assert ("data" in cfg) == (path.stem not in PRESETS)
    kwargs = {"width": 0.125} if cfg.model["name"] == "ssd_cpu" else {}
    detector = build_detector({**dict(cfg.model), **kwargs}, ["a", "b"], int(cfg.imgsz), None)
    assert resolve_layer_set(detector, opts.layers)  # the configured layer set exists in this model


TOOLS = sorted((Path(__file__).resolve().parents[1] / "tools").glob("*.py"))


def test_every_tool_script_is_a_command():
    from detkd.commands import COMMANDS

    assert sorted(COMMANDS.values()) == [p.stem for p in TOOLS]
    for path in TOOLS:
        assert f"from detkd.commands.{path.stem} import main" in path.read_text()


@pytest.mark.parametrize("name", [p.stem for p in TOOLS])
def test_tool_help(name, capsys):
    import importlib

    module = importlib.import_module(f"detkd.commands.{name}")
    parse = module.parse_args if hasattr(module, "parse_args") else module.build_parser().parse_args
    with pytest.raises(SystemExit) as exit_info:
        parse(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and len(out) > 150


@pytest.mark.parametrize("path", [p for kind in ("train", "distill", "prune") for p in sorted((Path(__file__).resolve().parents[1] / "configs" / kind).glob("*.py")) if p.stem in PRESETS], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_presets_have_no_data_and_take_it_from_data_path(path, tmp_path):
    from detkd.errors import ConfigError
    from detkd.data.sources import read_split
    from tests.test_layouts import make_labelimg

    cfg = load_config(path)
    assert "data" not in cfg
    with pytest.raises(ConfigError, match="no dataset: pass --data PATH"):
        read_split(cfg.get("data") or {}, "train")
    cfg = load_config(path, {"imgsz": 64}, data=make_labelimg(tmp_path / "ds"))
    assert cfg.data["format"] == "labelimg" and len(read_split(dict(cfg.data), "train").records) == 4
