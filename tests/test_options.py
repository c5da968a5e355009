"""Typed options: every config section parsed once, unknown keys and bad values are one-line
errors naming the key, --cfg-options keep spaces, and every tool refuses them the same way."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from detkd.config import load_config, parse_value
from detkd.errors import ConfigError, DetkdError
from detkd.options import AugmentConfig, DistillOptions, PruneOptions, RunOptions, TrainOptions, option, parse_options, parse_section

REPO = Path(__file__).resolve().parents[1]
TRAIN_CFG = REPO / "configs" / "train" / "fyolo_synthetic.py"
DISTILL_CFG = REPO / "configs" / "distill" / "fyolo_synthetic.py"
PRUNE_CFG = REPO / "configs" / "prune" / "ssd_cpu_synthetic.py"


@dataclass
class _Inner:
    kernel: int = option(3, min=1)
    mode: str = option("class", choices=("class", "all"))


@dataclass
class _Outer:
    name: str = option(help="a name")
    ratio: float = option(0.5, min=0.0, max=1.0)
    inner: _Inner = option(factory=_Inner)
    items: list[_Inner] = option(factory=list)
    pair: tuple[float, float] = (1.0, 2.0)
    maybe: int | None = None


def test_parse_section_defaults_types_and_nesting():
    out = parse_section(_Outer, {"name": "x", "inner": {"kernel": 5}, "items": [{"mode": "all"}], "pair": [3, 4]}, "s")
    assert out == _Outer("x", 0.5, _Inner(5, "class"), [_Inner(3, "all")], (3.0, 4.0), None)
    assert isinstance(out.pair[0], float) and parse_section(_Outer, {"name": "y", "ratio": 1}, "s").ratio == 1.0


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "ratoi": 0.1}, "unknown config key s.ratoi (did you mean s.ratio?)"),
    ({"name": "x", "zzz": 1}, "unknown config key s.zzz; known: inner, items, maybe, name, pair, ratio"),
    ({}, "config key s.name is missing (a name)"),
    ({"name": 3}, "config key s.name = 3: expected a string"),
    ({"name": "x", "ratio": "abc"}, "config key s.ratio = 'abc': expected a number from 0 to 1"),
    ({"name": "x", "ratio": 1.5}, "config key s.ratio = 1.5: expected a number from 0 to 1"),
    ({"name": "x", "ratio": True}, "config key s.ratio = True: expected a number from 0 to 1"),
    ({"name": "x", "inner": {"kernel": 0}}, "config key s.inner.kernel = 0: expected an integer >= 1"),
    ({"name": "x", "inner": {"kernel": 2.5}}, "config key s.inner.kernel = 2.5: expected an integer >= 1"),
    ({"name": "x", "inner": {"mode": "box"}}, "config key s.inner.mode = 'box': expected one of 'class', 'all'"),
    ({"name": "x", "inner": 3}, "config key s.inner = 3: expected a dict with keys kernel, mode"),
    ({"name": "x", "items": [{"mdoe": "all"}]}, "unknown config key s.items[0].mdoe (did you mean s.items[0].mode?)"),
    ({"name": "x", "pair": [1]}, "config key s.pair = [1]: expected 2 values"),
    ({"name": "x", "maybe": "no"}, "config key s.maybe = 'no': expected an integer or None"),
])
def test_parse_section_errors_name_the_key_the_value_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError) as info:
        parse_section(_Outer, data, "s")
    assert str(info.value) == message and "\n" not in str(info.value)


def test_one_default_per_setting_the_shipped_base_configs_agree_with_the_options():
    """configs/_base_ spell the defaults out for readers; they must be the options' own."""
    from detkd.options import options_dict

    cfg = load_config(DISTILL_CFG)
    assert dict(cfg.distill) == options_dict(DistillOptions())
    base = dict(cfg.train)
    assert {k: base[k] for k in ("batch_size", "seed", "val_interval", "ema", "amp", "cpu_amp")} == {
        k: getattr(TrainOptions(), k) for k in ("batch_size", "seed", "val_interval", "ema", "amp", "cpu_amp")}
    assert dict(load_config(PRUNE_CFG).prune)["select"] == options_dict(PruneOptions().select)


def test_load_config_fills_every_default_into_the_resolved_config():
    cfg = load_config(TRAIN_CFG)
    assert cfg.train.augment["scale"] == list(AugmentConfig().scale) and cfg.decode["pre_nms_topk"] == 1000
    assert cfg.teacher["allow_untrained"] is False and isinstance(parse_options(cfg), RunOptions)


@pytest.mark.parametrize(("override", "message"), [
    ({"train.epoch": 3}, "unknown config key train.epoch (did you mean train.epochs?)"),
    ({"imgz": 320}, "unknown config key imgz (did you mean imgsz?)"),
    ({"train.epochs": "abc"}, "config key train.epochs = 'abc': expected an integer >= 1"),
    ({"train.batch_size": 0}, "config key train.batch_size = 0: expected an integer >= 1"),
    ({"distill.fm_nms.mode": "box"}, "config key distill.fm_nms.mode = 'box': expected one of 'class', 'class_box', 'all'"),
    ({"model.widht": 0.5}, None),  # the model builder's arguments are checked when it is built
])
def test_load_config_refuses_unknown_keys_and_bad_values(override, message):
    if message is None:
        from detkd.engine.runner import build_detector

        cfg = load_config(DISTILL_CFG, {**override, "model.anchors": None})
        with pytest.raises(ConfigError, match=r"unknown config key model.widht \(did you mean model.width\?\)"):
            build_detector(dict(cfg.model), ["a"], 64, None)
        return
    with pytest.raises(ConfigError) as info:
        load_config(DISTILL_CFG, override)
    assert str(info.value) == f"{DISTILL_CFG}: {message}"


def test_load_config_errors_for_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.py: config file not found"):
        load_config(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("train = dict(epochs=3\n")
    with pytest.raises(ConfigError, match="broken.py: cannot read the config: SyntaxError"):
        load_config(broken)
    assert issubclass(ConfigError, DetkdError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("0.5", 0.5), ("1e-3", 0.001), ("abc", "abc"), ("/my data/VOC 2007", "/my data/VOC 2007"),
    ("true", True), ("False", False), ("None", None), ("a,b", ["a", "b"]), ("[1, 2]", [1, 2]), ("[a, b c]", ["a", "b c"]),
    ("(1, 2)", (1, 2)), ("{'a': 1}", {"a": 1}), ("'x y'", "x y"), ("dict(a=1)", "dict(a=1)"),
])
def test_cfg_option_values_keep_their_spaces(text, value):
    assert parse_value(text) == value


def test_cfg_options_with_spaces_reach_the_config():
    from detkd.config import DictAction
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    args = parser.parse_args(["--cfg-options", "data.root=/my data/set one", "train.epochs=3"])
    cfg = load_config(TRAIN_CFG, args.cfg_options)
    assert cfg.data["root"] == "/my data/set one" and cfg.train.epochs == 3


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.parametrize(("argv", "message"), [
    (["tools/train.py", str(TRAIN_CFG), "--cfg-options", "train.epoch=3"], "unknown config key train.epoch (did you mean train.epochs?)"),
    (["tools/train.py", str(TRAIN_CFG), "--cfg-options", "train.epochs=abc"], "train.epochs = 'abc': expected an integer >= 1"),
    (["tools/train_distill.py", str(DISTILL_CFG), "--cfg-options", "train.batch_size=0"], "train.batch_size = 0: expected an integer >= 1"),
    (["tools/train_distill.py", str(DISTILL_CFG), "--cfg-options", "distill.fm_nms.mode=box"], "distill.fm_nms.mode = 'box'"),
    (["tools/prune.py", str(PRUNE_CFG), "--checkpoint", "x.pth", "--cfg-options", "prune.ratoi=0.5"],
     "unknown config key prune.ratoi (did you mean prune.ratio?)"),
    (["tools/eval.py", str(TRAIN_CFG), "x.pth", "--cfg-options", "decode.score_thr=2"], "decode.score_thr = 2: expected a number from 0 to 1"),
    (["tools/export.py", str(TRAIN_CFG), "x.pth", "--out", "x.onnx", "--cfg-options", "imgz=320"], "unknown config key imgz (did you mean imgsz?)"),
    (["tools/benchmark.py", str(TRAIN_CFG), "a=x.pth", "--cfg-options", "data.format=vocc"], "data.format = 'vocc': expected one of"),
])
def test_every_tool_refuses_unknown_or_ill_typed_options_in_one_line(argv, message, tmp_path):
    proc = _tool(*argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and str(Path(argv[1]).name) in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback():
    proc = _tool("tools/train.py", str(TRAIN_CFG), "--debug", "--cfg-options", "train.epoch=3")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr
