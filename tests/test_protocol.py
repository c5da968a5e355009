"""The reporting protocol in code: no row reports on the split that chose it, no unlabeled pool shares an image with
a reported split, speedups come only from graphs timed together, verdicts flag every seed that misses, and the
distillation table runs end to end on real-format files (tiny recipes)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from detkd.data.synthetic import generate_synthetic
from detkd.distill.runner import read_unlabeled
from detkd.engine.results import ProtocolError, ResultsFile, paired_speedup, row_speedup, seed_verdict
from detkd.errors import ConfigError
from detkd.options import UnlabeledOptions

REPO = Path(__file__).resolve().parents[1]
VOC_SUBSET = REPO.parent / "shared" / "data" / "voc2012_subset"


def _script(name: str):
    if str(REPO / "benchmarks") not in sys.path:  # the scripts import their shared module, benchmarks/common.py
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(name: str = "a", **extra) -> dict:
    return {"name": name, "dataset": "d", "imgsz": 32, "params": 1, "flops": 1, "mAP50": 0.5, "AP": 0.3,
            "onnx_latency_ms": 1.0, **extra}


MACHINE = {"id": "abc123", "cpu": "test"}


# ---- the results writer -----------------------------------------------------------------------------------------

def test_writer_refuses_a_row_reported_on_the_split_that_chose_it(tmp_path):
    results = ResultsFile(tmp_path / "r.json", {}, "cmd", protocol=True)
    with pytest.raises(ProtocolError, match="reports on 'val', the split that chose it"):
        results.add(_row(split="val", selected_on="val", recipe="r@1", seed=0, machine=MACHINE))
    with pytest.raises(ProtocolError, match="does not state selected_on, recipe"):
        results.add(_row(split="test", seed=0, machine=MACHINE))
    with pytest.raises(ProtocolError, match="no fingerprint id"):
        results.add(_row(split="test", selected_on="val", recipe="r@1", seed=0, machine={"cpu": "x"}))
    assert not (tmp_path / "r.json").exists()  # nothing written by a refused row
    results.add(_row(split="test", selected_on="val", recipe="r@1", seed=0, machine=MACHINE))
    assert json.loads((tmp_path / "r.json").read_text())["rows"][0]["split"] == "test"
    # any results file refuses split == selected_on, protocol table or not
    with pytest.raises(ProtocolError):
        ResultsFile(tmp_path / "other.json", {}, "cmd").add(_row(split="test", selected_on="test"))


# ---- paired timing ----------------------------------------------------------------------------------------------

def test_speedup_only_from_graphs_timed_together():
    timing = {"rounds_ms": {"student": [1.0, 2.0, 1.0], "teacher": [5.0, 6.0, 7.0]}, "machine": MACHINE, "run": "r1"}
    assert paired_speedup(timing, "student", "teacher") == 5.0  # median of 5, 3, 7
    with pytest.raises(ProtocolError, match="'peer' not timed in that measurement"):
        paired_speedup(timing, "peer", "teacher")
    with pytest.raises(ProtocolError, match="no machine fingerprint"):
        paired_speedup({**timing, "machine": {}}, "student", "teacher")
    student = {"name": "student", "timing": timing}
    teacher = {"name": "teacher", "timing": {"rounds_ms": {"teacher": [5.0]}, "machine": MACHINE, "run": "r0"}}
    assert row_speedup(student, teacher) == 5.0  # the student's own record holds both
    other = {"name": "other", "timing": {"rounds_ms": {"other": [2.0], "teacher": [4.0]}, "machine": {"id": "zzz"}, "run": "r2"}}
    with pytest.raises(ProtocolError, match="timed on different machines \\(abc123 / zzz\\)"):
        row_speedup(student, other)
    same_machine = {"name": "other", "timing": {**other["timing"], "machine": MACHINE}}
    with pytest.raises(ProtocolError, match="timed in different runs"):
        row_speedup(student, same_machine)


def test_interleaved_timing_records_rounds_machine_and_run(tmp_path, monkeypatch):
    import onnx
    import torch
    from onnx import TensorProto, helper

    import detkd.engine.benchmark as benchmark

    graphs = {}
    for name in ("a", "b", "c"):
        shape = [1, 3, 4, 4]
        graph = helper.make_graph([helper.make_node("Add", ["images", "images"], ["out"])], name,
                                  [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)])
        graphs[name] = (tmp_path / f"{name}.onnx", torch.rand(1, 3, 4, 4))
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), graphs[name][0])
    fake = iter([1.0, 4.0, 2.0, 1.0, 6.0, 2.0])  # round 1: a b c, round 2: a b c

    monkeypatch.setattr(benchmark, "time_fn", lambda fn, warmup, iters: benchmark.Timing(next(fake), 0, 0, iters))
    record = benchmark.interleaved_onnx_latency(graphs, threads=1, rounds=2)
    assert record["rounds_ms"] == {"a": [1.0, 1.0], "b": [4.0, 6.0], "c": [2.0, 2.0]}
    assert record["ms"] == {"a": 1.0, "b": 5.0, "c": 2.0}
    assert record["machine"]["id"] and record["machine"]["threads"] == 1 and len(record["run"]) == 12
    assert paired_speedup(record, "a", "b") == 5.0
    with pytest.raises(ValueError, match="at least two graphs"):
        benchmark.interleaved_onnx_latency({"a": graphs["a"]}, threads=1)


# ---- verdicts ---------------------------------------------------------------------------------------------------

def test_seed_verdict_judges_the_mean_and_flags_each_missing_seed():
    v = seed_verdict({0: 0.02, 1: 0.05, 2: 0.04}, 0.03)
    assert v["met"] and v["missed"] == [0] and v["n"] == 3 and v["mean"] == pytest.approx(0.11 / 3)
    assert not seed_verdict({0: 0.01, 1: 0.02}, 0.03)["met"]
    assert seed_verdict({0: 1.2, 1: 0.8}, 1.0, higher=False)["missed"] == [0]
    assert seed_verdict({}, 0.03) == {"mean": None, "n": 0, "met": False, "missed": []}


def _table_row(method: str, seed: int, map50: float, speedup: float | None = None, **extra) -> dict:
    return {"name": f"d_{method}_s{seed}", "dataset": "voc_subset", "method": method, "seed": seed, "mAP50": map50,
            "AP": map50 / 2, "onnx_latency_ms": 2.0, "speedup": speedup, "images_per_epoch": 10, "recipe": f"{method}@1",
            "checkpoint_rule": "best val mAP50", "machine": {**MACHINE, "threads": 2}, "split": "test", "selected_on": "val",
            "imgsz": 32, "params": 1, "flops": 1, **extra}


def test_distill_table_verdicts_flag_the_seed_that_misses():
    table = _script("distill_table")
    rows = [_table_row("teacher", 0, 0.60),
            *[_table_row("labels_only", s, v, 6.0) for s, v in enumerate([0.40, 0.42, 0.41])],
            *[_table_row("distilled", s, v, x) for s, v, x in zip(range(3), [0.45, 0.44, 0.46], [6.1, 4.9, 6.2])],
            *[_table_row("yolov8n", s, 0.43, 3.0, speedup_of_student_over_peer=1.4) for s in range(3)]]
    lines = table.verdicts(rows)
    assert lines[0] == ("- distilled ≥ labels-only + 3 mAP50: **+4.0 mAP50** (s0 +5.0, s1 +2.0, s2 +5.0), +2.0 AP, n=3: "
                        "**met; seed 1 misses**.")
    assert lines[1] == ("- distilled ≥ labels-only + 3 AP: **+2.0 AP** (s0 +2.5, s1 +1.0, s2 +2.5), +4.0 mAP50, n=3: "
                        "**missed; seeds 0, 1, 2 miss**.")
    assert lines[2] == ("- the student ≥ 5x faster than its teacher (paired): **5.73x** (s0 6.10x, s1 4.90x, s2 6.20x; "
                        "distilled rows): **met; seed 1 misses**.")
    assert lines[3] == ("- the teacher stronger than the student it teaches: teacher 0.600 mAP50, labels-only student "
                        "0.410 (+19.0): **met**.")
    assert lines[4] == ("- best student ≥ 95 % of its teacher's mAP50 at ≥ 5x (paired): distilled: **75 %** at **5.73x** "
                        "(s0 75 % 6.10x, s1 73 % 4.90x, s2 77 % 6.20x): **missed; seeds 0, 1, 2 miss**.")
    assert lines[5].startswith("- detkd's student ahead of YOLOv8n (same epochs) in mAP50, at lower latency: distilled "
                               "+2.0 mAP50") and lines[5].endswith("1.40x as fast (paired): **met**.")


# ---- the unlabeled pool -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protocol_data")
    generate_synthetic(root, seed=5, counts={"train": 6, "val": 3, "test": 3, "unlabeled": 3}, size=64, workers=1,
                       progress=False)
    return root


def _voc_data(root: Path) -> dict:
    from detkd.data.layouts import discover

    return discover(root).data_config()


def test_training_refuses_an_unlabeled_pool_that_shares_a_reported_image(tiny_voc, tmp_path):
    data = _voc_data(tiny_voc)
    pool = read_unlabeled(data, UnlabeledOptions(folder="unlabeled", ratio=0.5))
    assert pool is not None and len(pool.records) == 3  # a folder no split holds: accepted
    with pytest.raises(ConfigError, match="3 of its 3 images are in the test split, which reports this run"):
        read_unlabeled(data, UnlabeledOptions(split="test", ratio=0.5))
    # a byte-identical copy of a val image, under another name in another folder, is found too
    extra = tmp_path / "extra"
    shutil.copytree(tiny_voc / "unlabeled", extra)
    from detkd.data.sources import read_split

    val_image = read_split(data, "val").records[0].path
    shutil.copy(val_image, extra / "renamed.jpg")
    with pytest.raises(ConfigError, match=f"1 of its 4 images are in the val split, which reports this run \\(first: {extra / 'renamed.jpg'}\\)"):
        read_unlabeled(data, UnlabeledOptions(folder=str(extra), ratio=0.5))
    # the train split is no reported split: unlabeled copies of training images are allowed
    train_pool = read_unlabeled(data, UnlabeledOptions(split="train", ratio=0.5))
    assert train_pool is not None and len(train_pool.records) == 6


# ---- the real VOC subset reads through --data -------------------------------------------------------------------

@pytest.mark.skipif(not VOC_SUBSET.is_dir(), reason="the shared VOC2012 subset is not beside the repository")
def test_voc_subset_reads_through_data_with_its_exact_counts():
    from detkd.config import load_config
    from detkd.data.folder import read_folder
    from detkd.data.sources import read_split

    cfg = load_config(REPO / "configs" / "recipes" / "fyolo_student_320.py", data=VOC_SUBSET)
    counts = {split: read_split(dict(cfg.data), split) for split in ("train", "val", "test")}
    assert {s: len(i.records) for s, i in counts.items()} == {"train": 1697, "val": 832, "test": 897}
    assert {s: i.num_boxes for s, i in counts.items()} == {"train": 3625, "val": 1708, "test": 1835}
    assert len(counts["train"].class_names) == 19 and "aeroplane" not in counts["train"].class_names
    assert len(read_folder(VOC_SUBSET / "unlabeled").records) == 1181
    pool = read_unlabeled(dict(cfg.data), UnlabeledOptions(folder="unlabeled", ratio=0.5))  # shares no reported image
    assert pool is not None and len(pool.records) == 1181


# ---- the distillation table, end to end on tiny settings --------------------------------------------------------

TINY = ["train.epochs=2", "train.val_interval=1", "train.batch_size=2", "train.num_workers=0", "imgsz=64",
        "model.width=0.125"]


def test_distill_table_runs_end_to_end_and_reports_on_test(tiny_voc, tmp_path, monkeypatch):
    """The committed recipes, shrunk by cfg-options at the command line (2 epochs, 64 px, width 1/8), trained on a
    VOC-layout folder read through --data: teacher, labels-only, distilled and distilled + unlabeled rows are each
    reported on test, selected on val, with their recipe's commit, the machine and a paired speedup."""
    table = _script("distill_table")
    real_run = table.run

    def tiny_run(cmd, quiet=True):
        at = cmd.index("--cfg-options") + 1
        real_run([*cmd[:at], *TINY, "teacher.imgsz=64", *cmd[at:]] if "train_distill" in cmd[1] else [*cmd[:at], *TINY, *cmd[at:]])

    monkeypatch.setattr(table, "run", tiny_run)
    monkeypatch.setattr(table, "RESULTS_FILE", tmp_path / "results" / "distill_table.json")
    monkeypatch.setattr(table, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(table, "teacher_checkpoint", lambda args: table.train_detkd("teacher", 0, None, args))
    monkeypatch.setattr(sys, "argv", ["distill_table.py", "--data", str(tiny_voc), "--seeds", "0", "--work", str(tmp_path / "w"),
                                      "--only", "teacher", "labels_only", "distilled", "distilled_unlabeled"])
    assert table.main() == 0
    rows = json.loads((tmp_path / "results" / "distill_table.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["teacher", "labels_only", "distilled", "distilled_unlabeled"]
    for row in rows:
        assert row["split"] == "test" and row["selected_on"] == "val" and row["recipe"].startswith("configs/recipes/")
        assert row["machine"]["id"] and 0.0 <= row["mAP50"] <= 1.0 and row["imgsz"] == 64
        assert row["best_epoch"] in (1, 2) and row["val_mAP50"] is not None
    students = rows[1:]
    for row in students:  # each timed beside the teacher in one measurement
        assert row["speedup"] == table.paired_speedup(row["timing"], row["name"], "voc_subset_teacher") > 0
        assert set(row["timing"]["rounds_ms"]) == {row["name"], "voc_subset_teacher"}
    assert [r["images_per_epoch"] for r in students] == [6, 6, 9]  # + half as many unlabeled images
    report = (tmp_path / "results" / "distill_table.md").read_text()
    assert "reported on **test**" in report and "- distilled ≥ labels-only + 3 mAP50: " in report
    # a second run finds every row done and trains nothing
    monkeypatch.setattr(table, "run", lambda cmd, quiet=True: pytest.fail(f"ran {cmd}"))
    assert table.main() == 0


# ---- the Status table -------------------------------------------------------------------------------------------

def test_status_renders_the_table_from_crafted_rows(tmp_path):
    status = _script("status")
    rows = [_table_row("teacher", 0, 0.60),
            *[_table_row("labels_only", s, v, 6.0) for s, v in enumerate([0.40, 0.42, 0.41])],
            *[_table_row("distilled", s, v, x) for s, v, x in zip(range(3), [0.45, 0.44, 0.46], [6.1, 4.9, 6.2])]]
    (tmp_path / "distill_table.json").write_text(json.dumps({"machine": {}, "command": "", "rows": rows}))
    lines = status.render(tmp_path).splitlines()
    assert lines[0] == "| dataset | target (test split) | measured: mean over seeds (each seed) | verdict |"
    assert lines[2] == ("| voc_subset | distilled ≥ labels-only + 3 mAP50 | **+4.0 mAP50** (s0 +5.0, s1 +2.0, s2 +5.0), "
                        "+2.0 AP, n=3 (`benchmarks/results/distill_table.json`) | **met; seed 1 misses** |")
    assert lines[3].startswith("| voc_subset | distilled ≥ labels-only + 3 AP | **+2.0 AP** (s0 +2.5")
    assert lines[4] == ("| voc_subset | unlabeled images add ≥ 1 mAP50 over distillation without them | – | "
                        "not measured on test yet |")
    assert lines[5].startswith("| voc_subset | the student ≥ 5x faster than its teacher (paired) | **5.73x** (s0 6.10x")
    assert lines[5].endswith("| **met; seed 1 misses** |")
    assert lines[7] == ("| voc_subset | the teacher stronger than the student it teaches | teacher 0.600 mAP50, labels-only "
                        "student 0.410 (+19.0) (`benchmarks/results/distill_table.json`) | **met** |")
    assert all(line.endswith("| not measured on test yet |") for line in lines[8:8 + 7])  # the BCCD targets
    # judged but listed under no target of its dataset: shown at the end, not dropped
    assert lines[-1].startswith("| voc_subset | best student ≥ 95 % of its teacher's mAP50 at ≥ 5x (paired) | distilled: **75 %**")
    assert len(lines) == 2 + len(status.TARGETS) + 1
    assert status.render(tmp_path / "empty").count("not measured on test yet") == len(status.TARGETS)


def test_distill_table_peer_takes_the_best_val_epoch_and_is_timed_beside_both(tiny_voc, tmp_path, monkeypatch):
    """The YOLOv8n peer (ultralytics' trainer, 3 tiny epochs): the checkpoint of the selection epoch with the best val
    mAP50 in its results.csv, reported on test, timed beside the teacher and the student recipe's graph."""
    table = _script("distill_table")
    real_run = table.run
    monkeypatch.setattr(table, "run", lambda cmd, quiet=True: real_run(
        [*cmd[:cmd.index("--cfg-options") + 1], *TINY, *cmd[cmd.index("--cfg-options") + 1:]]))
    monkeypatch.setattr(table, "peer_settings", lambda: {"epochs": 3, "imgsz": 64, "batch": 2})
    monkeypatch.setattr(table, "SELECTION_EPOCHS", (1, 2, 3))
    monkeypatch.setattr(table, "RESULTS_FILE", tmp_path / "results" / "distill_table.json")
    monkeypatch.setattr(table, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(table, "teacher_checkpoint", lambda args: table.train_detkd("teacher", 0, None, args))
    monkeypatch.setattr(sys, "argv", ["distill_table.py", "--data", str(tiny_voc), "--seeds", "1", "--work", str(tmp_path / "w"),
                                      "--only", "yolov8n"])
    assert table.main() == 0
    (row,) = json.loads((tmp_path / "results" / "distill_table.json").read_text())["rows"]
    weights = tmp_path / "w" / "voc_subset" / "seed_1" / "yolov8n" / "weights"
    import csv

    with open(weights.parent / "results.csv", newline="") as f:
        logged = {int(float(r["epoch"])): float(r["metrics/mAP50(B)"]) for r in
                  ({k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f))}
    best = max((1, 2, 3), key=lambda e: logged[e])
    assert row["best_epoch"] == best and row["val_mAP50"] == logged[best]
    assert row["checkpoint"] == str(weights / ("last.pt" if best == 3 else f"epoch{best - 1}.pt"))
    assert row["split"] == "test" and row["seed"] == 1 and row["recipe"].startswith("yolov8n.yaml (ultralytics) with the epochs")
    assert set(row["timing"]["rounds_ms"]) == {row["name"], "voc_subset_teacher", "student_recipe_graph"}
    assert row["speedup_of_student_over_peer"] == table.paired_speedup(row["timing"], "student_recipe_graph", row["name"])
    assert sorted(p.name for p in weights.glob("epoch*.pt")) == ([] if best == 3 else [f"epoch{best - 1}.pt"])


def test_distill_table_bccd_distills_from_its_kept_teacher():
    table = _script("distill_table")
    assert table.teacher_subject("bccd") == "ssd_cpu_w0.5_bccd" and table.teacher_subject("voc_subset") == "ssd_teacher_320_voc_subset"
    recipe = table.row_recipe("teacher", "bccd")
    assert recipe.startswith("benchmarks/subjects/ssd_cpu_w0.5_bccd.pth@e9eafb2f (python tools/train.py configs/train/ssd_cpu_bccd.py")
    assert table.row_recipe("labels_only", "bccd").startswith("configs/recipes/fyolo_student_320.py@")
    assert not table.DATASETS["bccd"]["unlabeled"]  # its val and test report: no unlabeled row


def test_distill_table_verdict_on_fewer_than_three_seeds_is_no_claim():
    table = _script("distill_table")
    rows = [_table_row("teacher", 0, 0.60), _table_row("labels_only", 0, 0.40, 6.0), _table_row("distilled", 0, 0.45, 6.1)]
    lines = table.verdicts(rows)
    assert lines[0].endswith("n=1: **met so far (1 of 3 seeds: no claim yet)**.")
    assert lines[3].endswith("(+20.0): **met so far (1 of 3 seeds: no claim yet)**.")
