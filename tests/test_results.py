"""Benchmark results files: resumable rows, one format, tables and plots generated from them."""

from __future__ import annotations

import json

import pytest

from detkd.engine.benchmark import train_step_ms, validation_curve
from detkd.engine.results import (ResultsFile, last_validation_gain, markdown_table, mean_sd, pareto_front, plot_map_vs_fps,
                                  relative_path, seed_summary)


def _row(name: str, map50: float, latency: float) -> dict:
    return {"name": name, "dataset": "bccd", "imgsz": 320, "params": 1_500_000, "flops": 2_000_000_000,
            "mAP50": map50, "AP": map50 / 2, "onnx_latency_ms": latency}


def test_rows_survive_a_restart_and_replace_by_key(tmp_path):
    path = tmp_path / "results" / "bench.json"
    first = ResultsFile(path, {"cpu": "x", "threads": 2}, "python bench.py")
    first.add(_row("teacher", 0.8, 40.0))
    again = ResultsFile(path, {"cpu": "x", "threads": 2}, "python bench.py")  # an interrupted run restarts
    assert again.has(name="teacher", dataset="bccd") and not again.has(name="student")
    again.add(_row("student", 0.7, 8.0))
    again.add(_row("teacher", 0.81, 41.0))  # same key: replaced, not duplicated
    data = json.loads(path.read_text())
    assert set(data) == {"machine", "command", "rows"} and data["machine"]["threads"] == 2
    assert [(r["name"], r["mAP50"]) for r in data["rows"]] == [("student", 0.7), ("teacher", 0.81)]


def test_update_changes_the_matching_rows_in_place_and_saves(tmp_path):
    path = tmp_path / "bench.json"
    results = ResultsFile(path, {"cpu": "x"}, "cmd")
    for name, score in (("a", 0.5), ("b", 0.6), ("c", 0.7)):
        results.add(_row(name, score, 9.0))
    assert results.update(lambda r: r["mAP50"] > 0.55, series="earlier") == 2
    assert results.update(lambda r: r["name"] == "none", series="x") == 0
    rows = json.loads(path.read_text())["rows"]
    assert [(r["name"], r.get("series")) for r in rows] == [("a", None), ("b", "earlier"), ("c", "earlier")]


def test_two_writers_keep_each_others_rows(tmp_path):
    path = tmp_path / "bench.json"
    a = ResultsFile(path, {"cpu": "x", "threads": 2}, "python bench.py --dataset a")
    b = ResultsFile(path, {"cpu": "x", "threads": 2}, "python bench.py --dataset b")  # opened before a writes
    a.add(_row("one", 0.5, 9.0))
    b.add(_row("two", 0.6, 9.0))
    assert [r["name"] for r in json.loads(path.read_text())["rows"]] == ["one", "two"]


def test_rows_need_the_common_columns(tmp_path):
    results = ResultsFile(tmp_path / "r.json", {}, "cmd")
    with pytest.raises(ValueError, match="lacks"):
        results.add({"name": "x", "dataset": "d"})


def test_markdown_and_plot(tmp_path):
    rows = [_row("teacher", 0.8, 40.0), _row("student", 0.75, 8.0)]
    table = markdown_table(rows, ["name", "params", "flops", "mAP50", "onnx_latency_ms", "missing"])
    assert table.splitlines()[0] == "| name | params | flops | mAP50 | onnx_latency_ms | missing |"
    assert "| teacher | 1.50M | 2.00G | 0.800 | 40.0 | - |" in table
    out = plot_map_vs_fps(rows, tmp_path / "plot.png", "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front():
    points = [(10.0, 0.5), (20.0, 0.4), (5.0, 0.6), (15.0, 0.3), (20.0, 0.4), (1.0, 0.55)]
    # (15, 0.3) loses to (20, 0.4); (1, 0.55) to (5, 0.6); the two (20, 0.4) tie and both stay
    assert pareto_front(points) == [2, 0, 1, 4]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


def test_plot_has_one_panel_per_dataset(tmp_path):
    from PIL import Image

    rows = [dict(_row(name, m, ms), dataset=ds) for ds in ("bccd", "voc")
            for name, m, ms in (("teacher", 0.8, 40.0), ("student", 0.7, 2.0), ("pruned", 0.6, 30.0))]
    one = Image.open(plot_map_vs_fps(rows[:3], tmp_path / "one.png", "t"))
    two = Image.open(plot_map_vs_fps(rows, tmp_path / "two.png", "t"))
    assert two.width > one.width * 1.6 and abs(two.height - one.height) < 0.2 * one.height



def test_plot_has_one_row_of_panels_per_metric(tmp_path):
    from PIL import Image

    rows = [_row("teacher", 0.8, 40.0), _row("student", 0.7, 2.0), dict(_row("no_ap", 0.6, 10.0), AP=None)]
    one = Image.open(plot_map_vs_fps(rows, tmp_path / "one.png", "t"))
    both = Image.open(plot_map_vs_fps(rows, tmp_path / "both.png", "t", metric=("mAP50", "AP")))
    assert both.height > one.height * 1.6 and abs(both.width - one.width) < 0.2 * one.width

def test_mean_sd_is_the_sample_standard_deviation():
    assert mean_sd([0.5, 0.6, 0.7]) == "0.600 ± 0.100"  # sqrt(((-0.1)^2 + 0 + 0.1^2) / 2) = 0.1
    assert mean_sd([0.5]) == "0.500" and mean_sd([]) == "-"
    assert mean_sd([100.0, 110.0], digits=0) == "105 ± 7"  # sd = sqrt(50) = 7.07


def test_seed_summary_groups_runs_in_first_seen_order():
    rows = [{"m": "kd", "mAP50": 0.6, "t": None}, {"m": "lo", "mAP50": 0.5, "t": 10.0},
            {"m": "kd", "mAP50": 0.7, "t": 20.0}, {"m": "kd", "mAP50": 0.8, "t": 30.0}]
    kd, lo = seed_summary(rows, "m", ["mAP50", "t"])
    assert kd["m"] == "kd" and kd["n"] == 3 and kd["mAP50"] == pytest.approx(0.7) and kd["mAP50_sd"] == pytest.approx(0.1)
    assert kd["t"] == pytest.approx(25.0) and kd["t_sd"] == pytest.approx(50 ** 0.5)  # the None run is left out
    assert lo["n"] == 1 and lo["mAP50_sd"] == 0.0 and lo["t"] == 10.0


def test_plot_draws_error_bars_for_means(tmp_path):
    from PIL import Image, ImageChops

    rows = [_row("teacher", 0.8, 40.0), _row("student", 0.5, 8.0)]
    plain = Image.open(plot_map_vs_fps(rows, tmp_path / "plain.png", "t")).convert("RGB")
    rows[1]["mAP50_sd"] = 0.1
    bars = Image.open(plot_map_vs_fps(rows, tmp_path / "bars.png", "t")).convert("RGB")
    assert plain.size == bars.size and ImageChops.difference(plain, bars).getbbox() is not None


def test_plot_reads_the_latency_column_it_is_given(tmp_path):
    from PIL import Image, ImageChops

    rows = [dict(_row("float", 0.6, 9.0), deployed_latency_ms=9.0), dict(_row("binary", 0.5, 12.0), deployed_latency_ms=4.5)]
    onnx = Image.open(plot_map_vs_fps(rows, tmp_path / "onnx.png", "t")).convert("RGB")
    deployed = Image.open(plot_map_vs_fps(rows, tmp_path / "deployed.png", "t", latency="deployed_latency_ms")).convert("RGB")
    assert ImageChops.difference(onnx.resize(deployed.size), deployed).getbbox() is not None
    missing = plot_map_vs_fps([_row("float", 0.6, 9.0)], tmp_path / "none.png", "t", latency="deployed_latency_ms")
    assert missing.is_file()  # rows without that latency are left out, not an error


def test_last_validation_gain_is_the_last_step_of_each_curve_in_points():
    rows = [{"val_curve": [[25, 0.60], [30, 0.62]]}, {"val_curve": [[25, 0.50], [30, 0.48]]}, {"val_curve": [[30, 0.7]]}, {}]
    assert last_validation_gain(rows) == "0.0 ± 2.8 (ep 25 -> 30)"  # gains +2, -2 points; sd sqrt(8) = 2.83
    assert last_validation_gain(rows[:1]) == "2.0 (ep 25 -> 30)" and last_validation_gain(rows[2:]) == "-"


def test_train_step_ms_is_the_median_after_the_first_epoch(tmp_path):
    logs = tmp_path / "20261201_120000" / "vis_data"
    logs.mkdir(parents=True)
    entries = [{"epoch": 1, "loss": 1.0, "time": 9.0},  # warm-up epoch: skipped
               {"epoch": 2, "loss": 1.0, "time": 0.10}, {"epoch": 2, "loss": 1.0, "time": 0.30},
               {"epoch": 3, "loss": 1.0, "time": 0.20}, {"coco/AP50": 0.5, "time": 5.0, "epoch": 3}]  # validation: no loss
    (logs / "scalars.json").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    assert train_step_ms(tmp_path) == pytest.approx(200.0)
    assert train_step_ms(tmp_path / "nothing") is None


def test_validation_curve_reads_every_validation_by_epoch(tmp_path):
    for stamp, entries in (("20261201_120000", [{"coco/AP50": 0.2, "step": 5}, {"loss": 1.0, "epoch": 6, "step": 80},
                                                {"coco/AP50": 0.4, "step": 10}]),
                           ("20261201_130000", [{"coco/AP50": 0.45, "step": 10}, {"coco/AP50": 0.5, "step": 15}])):  # resumed
        logs = tmp_path / stamp / "vis_data"
        logs.mkdir(parents=True)
        (logs / "scalars.json").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    assert validation_curve(tmp_path) == [(5, 0.2), (10, 0.45), (15, 0.5)]


def test_relative_path_is_relative_inside_the_root_and_absolute_outside(tmp_path):
    root = tmp_path / "repo"
    assert relative_path(root / "work" / "a.pth", root) == "work/a.pth"
    assert relative_path(tmp_path / "elsewhere.pth", root) == str(tmp_path / "elsewhere.pth")
    assert relative_path(root / "work" / ".." / "b.pth", root) == "b.pth" and relative_path(None, root) is None
