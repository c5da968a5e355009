"""tools/prune.py end to end on a tiny SSD: every stage of each method, plan editing, resume, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detkd.data.synthetic import generate_synthetic
from detkd.engine.benchmark import count_params
from detkd.engine.checkpoint import load_detector
from detkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/prune/ssd_cpu_synthetic.py"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prune_synth")
    generate_synthetic(root, seed=2, counts={"train": 12, "val": 6, "test": 0, "unlabeled": 0}, size=96, workers=1, progress=False)
    return root


def _options(data_root: Path) -> list[str]:
    return [f"data.root={data_root}", "data.generate=None", "imgsz=64", "model.width=0.125", "train.batch_size=4",
            "train.num_workers=1", "train.log_interval=1", "prune.min_keep=2", "prune.sparsity.epochs=1",
            "prune.retrain_epochs=1", "prune.sweep.quantiles=[0.5,0.9]", "prune.threads=1",
            "prune.round_to=1"]  # the tiny SSD's convs have 2 to 64 filters: exact counts, no rounding


def _run(tool: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ssd(tiny_data, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("ssd")
    _run("train.py", "configs/train/ssd_cpu_synthetic.py", "--work-dir", str(work), "--cfg-options",
         *_options(tiny_data)[:6], "train.epochs=2")
    return work / "epoch_2.pth"


def _prune(ssd: Path, work: Path, data: Path, *extra: str, options: tuple[str, ...] = (), ok: bool = True):
    return _run("prune.py", CONFIG, "--checkpoint", str(ssd), "--work-dir", str(work), *extra,
                "--cfg-options", *_options(data), *options, ok=ok)


def test_singh_pipeline_every_stage_then_skip_then_resume(ssd, tiny_data, tmp_path):
    work = tmp_path / "singh"
    out = _prune(ssd, work, tiny_data).stdout
    for stage in ("sparsity", "sweep", "plan", "apply", "retrain", "report"):
        assert f"[prune] stage {stage}" in out
    for artefact in ("sparse.pth", "sweep.json", "sweep.md", "plan.json", "pruned.pth", "retrained.pth",
                     "report.json", "report.md", "report.png", "onnx/pruned.onnx"):
        assert (work / artefact).is_file(), artefact
    sweep = json.loads((work / "sweep.json").read_text())
    assert [r["threshold"] for r in sweep["rows"]][0] == 0.0 and len(sweep["rows"]) == 3
    report = json.loads((work / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["original", "pruned", "retrained"] and rows["retrained"]["retrained"] is True
    assert rows["pruned"]["params"] < rows["original"]["params"] and rows["pruned"]["method"] == "singh"
    assert rows["original"]["method"] == "unpruned" and rows["pruned"]["onnx_size_mb"] < rows["original"]["onnx_size_mb"]
    plan = json.loads((work / "plan.json").read_text())
    pruned = load_detector(work / "pruned.pth")  # no config: shapes come with the checkpoint
    assert count_params(pruned) == plan["params_after"] == rows["pruned"]["params"]
    for layer in plan["layers"]:
        assert pruned.get_submodule(layer["name"]).out_channels == len(layer["kept"])
    # eval tool on the retrained, pruned checkpoint with the original training config
    _run("eval.py", "configs/train/ssd_cpu_synthetic.py", str(work / "retrained.pth"), "--cfg-options", *_options(tiny_data)[:4])
    # finished stages are skipped
    assert "[prune] stage" not in _prune(ssd, work, tiny_data).stdout
    # a longer retraining continues the interrupted run only with --resume
    proc = _prune(ssd, work, tiny_data, "--stage", "retrain", options=("prune.retrain_epochs=2",), ok=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    _prune(ssd, work, tiny_data, "--stage", "retrain", "--resume", options=("prune.retrain_epochs=2",))
    assert (work / "retrain" / "epoch_2.pth").is_file()
    assert load_detector(work / "retrained.pth").detkd_pruned["plans"][0]["method"] == "singh"


def test_l1_plan_edit_apply_and_add_to_results(ssd, tiny_data, tmp_path):
    work = tmp_path / "l1"
    _prune(ssd, work, tiny_data, "--method", "l1", "--ratio", "0.5", "--stage", "plan")
    assert not (work / "pruned.pth").exists()
    plan = json.loads((work / "plan.json").read_text())
    assert plan["method"] == "l1" and all(len(layer["removed"]) == round(0.5 * layer["channels"]) for layer in plan["layers"])
    plan["layers"][0]["removed"] = [0]  # a user's edit: keep more of the first conv
    (work / "plan.json").write_text(json.dumps(plan))
    proc = _prune(ssd, work, tiny_data, "--method", "l1", "--stage", "retrain", ok=False)
    assert proc.returncode == 2 and "run the apply stage first" in proc.stderr
    results = tmp_path / "benchmark.json"
    results.write_text(json.dumps({"machine": {"cpu": "x"}, "command": "tools/benchmark.py ...", "rows": []}))
    _prune(ssd, work, tiny_data, "--method", "l1", "--stage", "apply", "report", "--add-to", str(results))
    first = load_detector(work / "pruned.pth").get_submodule(plan["layers"][0]["name"])
    assert first.out_channels == plan["layers"][0]["channels"] - 1
    added = json.loads(results.read_text())
    assert [r["name"] for r in added["rows"]] == ["l1:original", "l1:pruned"] and added["command"] == "tools/benchmark.py ..."
    assert (tmp_path / "benchmark.png").is_file()
    # another method in the same work dir is refused
    proc = _prune(ssd, work, tiny_data, "--method", "taylor", ok=False)
    assert proc.returncode == 2 and "holds a l1 run" in proc.stderr


def test_taylor_iterative_pruning(ssd, tiny_data, tmp_path):
    work = tmp_path / "taylor"
    _prune(ssd, work, tiny_data, "--method", "taylor", "--ratio", "0.64",
           options=("prune.iterations=2", "prune.finetune_epochs=1", "prune.taylor_batches=2", "prune.scope=global"))
    assert (work / "iter_1" / "plan.json").is_file() and (work / "iter_1" / "finetuned.pth").is_file()
    first = json.loads((work / "iter_1" / "plan.json").read_text())
    second = json.loads((work / "plan.json").read_text())
    assert first["options"]["step_ratio"] == pytest.approx(0.4)  # 1 - sqrt(1 - 0.64)
    total = sum(layer["channels"] for layer in first["layers"])
    removed = sum(len(layer["removed"]) for layer in first["layers"])
    assert 0.38 * total <= removed <= round(0.4 * total)  # ranked globally; min_keep spares a few
    assert [layer["channels"] for layer in second["layers"]] == [len(layer["kept"]) for layer in first["layers"]]
    assert json.loads((work / "report.json").read_text())["rows"][-1]["retrained"] is True


def test_latency_aware_rounded_plan_and_distilled_retraining(ssd, tiny_data, tmp_path):
    work = tmp_path / "l1_latency"
    out = _prune(ssd, work, tiny_data, "--method", "l1", "--ratio", "0.5",
                 options=("prune.round_to=4", "prune.latency_aware=True", "prune.retrain.distill=True")).stdout
    assert "measuring the layer latency table" in out
    plan = json.loads((work / "plan.json").read_text())
    assert plan["options"]["latency_aware"] is True and plan["options"]["round_to"] == 4
    assert sum(len(layer["removed"]) for layer in plan["layers"]) > 0
    for layer in plan["layers"]:
        assert not layer["removed"] or (layer["channels"] - len(layer["removed"])) % 4 == 0, layer
    table = json.loads((work / "latency.json").read_text())
    assert {layer["name"] for layer in plan["layers"]} <= set(table["layers"]) and table["multiple"] == 4
    logs = "".join(p.read_text() for p in (work / "retrain").glob("2*/vis_data/scalars.json"))
    assert '"loss_kd_cls"' in logs and '"loss_kd_box"' in logs  # retrained against the unpruned model
    assert json.loads((work / "report.json").read_text())["rows"][-1]["retrained"] is True

    # prune.sparsity.cost=latency weights the sparsity penalty by the same table's ms per filter (not measured again)
    from detkd.config import load_config, parse_value
    from detkd.prune.latency import latency_slopes
    from detkd.prune.pipeline import PrunePipeline

    options = [*_options(tiny_data), "prune.method=l1", "prune.round_to=4", "prune.sparsity.cost=latency"]
    cfg = load_config(REPO / CONFIG, {k: parse_value(v) for k, v in (o.split("=", 1) for o in options)})
    other = tmp_path / "cost_latency"
    pipeline = PrunePipeline(cfg, ssd, other)
    other.mkdir()
    (other / "latency.json").write_bytes((work / "latency.json").read_bytes())
    model = pipeline.source()
    layers = pipeline.layers(model)
    stamp = (other / "latency.json").stat().st_mtime_ns
    assert pipeline._filter_costs(model, layers) == latency_slopes(table, layers)
    assert (other / "latency.json").stat().st_mtime_ns == stamp

    # prune.sparsity.cost_power reaches the sparsity stage's model: the FLOPs' square roots, normalised
    from detkd.prune.latency import filter_flops
    from detkd.prune.sparsity import cost_weights

    rooted = PrunePipeline(load_config(REPO / CONFIG, {k: parse_value(v) for k, v in (o.split("=", 1) for o in [
        *options[:-1], "prune.sparsity.cost=flops", "prune.sparsity.cost_power=0.5"])}), ssd, tmp_path / "cost_root")
    flops = rooted._filter_costs(model, layers)
    assert flops == filter_flops(model, layers, 64)
    made = rooted.sparsity_model(model, layers, flops).cost_weights
    assert made == pytest.approx(cost_weights(model, layers, flops, 0.5))
    assert made != pytest.approx(cost_weights(model, layers, flops))
    with pytest.raises(ConfigError, match="cost_power"):
        load_config(REPO / CONFIG, {"prune.sparsity.cost_power": 2.0})
    settings = json.loads((work / "pipeline.json").read_text())["stages"]
    assert settings["retrain"]["retrain"]["distill"] is True


def test_singh_sparsity_with_a_growing_flops_weighted_group_penalty(ssd, tiny_data, tmp_path):
    work = tmp_path / "singh_group"
    _prune(ssd, work, tiny_data, "--stage", "sparsity",
           options=("prune.sparsity.kind=group", "prune.sparsity.growth=2.0", "prune.sparsity.epochs=2",
                    "prune.sparsity.cost=flops"))
    entries = [json.loads(line) for p in (work / "sparsity").glob("2*/vis_data/scalars.json")
               for line in p.read_text().splitlines()]
    steps = [e for e in entries if "loss_sparsity" in e]
    assert steps and all(0.0 <= e["filters_empty"] <= 1.0 for e in steps)
    assert {e["epoch"] for e in steps} == {1, 2}
    made = json.loads((work / "pipeline.json").read_text())["stages"]["sparsity"]["sparsity"]
    assert (made["kind"], made["cost"]) == ("group", "flops")


def test_singh_sparsity_as_a_proximal_step_zeroes_bn_scales(ssd, tiny_data, tmp_path):
    import torch

    from detkd.config import load_config, parse_value
    from detkd.prune.groups import resolve_layer_set
    from detkd.prune.pipeline import PipelineError, PrunePipeline
    from detkd.prune.sparsity import following_bn

    work = tmp_path / "singh_prox"
    options = ("prune.sparsity.kind=bn_scale", "prune.sparsity.proximal=True", "prune.sparsity.weight=1e6")
    _prune(ssd, work, tiny_data, "--stage", "sparsity", options=options)  # a step of lr * 1e6 empties every filter
    entries = [json.loads(line) for p in (work / "sparsity").glob("2*/vis_data/scalars.json")
               for line in p.read_text().splitlines()]
    steps = [e for e in entries if "sparsity_penalty" in e]
    assert steps and not any("loss_sparsity" in e for e in entries)
    assert steps[-1]["filters_empty"] == 1.0
    sparse = load_detector(work / "sparse.pth")
    for name in resolve_layer_set(sparse, "all"):
        bn = following_bn(sparse, name)
        assert bn is None or torch.count_nonzero(bn.weight) == 0, name
    record = json.loads((work / "pipeline.json").read_text())
    assert record["stages"]["sparsity"]["sparsity"]["proximal"] is True

    # a stage record written before an option existed counts as made with its default, not as other settings
    cfg = load_config(REPO / CONFIG, {k: parse_value(v) for k, v in (o.split("=", 1) for o in [*_options(tiny_data), *options])})
    pipeline = PrunePipeline(cfg, ssd, work)
    del record["stages"]["sparsity"]["sparsity"]["proximal"]
    (work / "pipeline.json").write_text(json.dumps(record))
    with pytest.raises(PipelineError, match="prune.sparsity.proximal"):  # made without it: the default, False
        pipeline._check_stage_settings("sparsity", "sparse.pth")
    cfg.prune.sparsity.proximal = False
    PrunePipeline(cfg, ssd, work)._check_stage_settings("sparsity", "sparse.pth")


def test_singh_threshold_chosen_for_a_parameter_budget(ssd, tiny_data, tmp_path):
    import torch

    from detkd.config import load_config, parse_value
    from detkd.prune.groups import resolve_layer_set
    from detkd.prune.pipeline import PrunePipeline
    from detkd.prune.sparsity import effective_weights

    work, target = tmp_path / "singh_budget", 2.5
    budget = (f"prune.sweep.target_param_ratio={target}",)
    _prune(ssd, work, tiny_data, "--stage", "sparsity", "sweep", "plan", options=budget)
    sweep = json.loads((work / "sweep.json").read_text())
    assert [r["threshold"] for r in sweep["rows"]][0] == 0.0 and len(sweep["rows"]) == 2  # threshold 0, then the budget's
    assert sweep["target_param_ratio"] == target and sweep["chosen"] == sweep["rows"][1]
    plan = json.loads((work / "plan.json").read_text())
    assert plan["options"]["threshold"] == sweep["chosen"]["threshold"]
    assert plan["params_before"] / plan["params_after"] == pytest.approx(sweep["chosen"]["param_ratio"])
    assert sweep["chosen"]["param_ratio"] >= target

    # the smallest such threshold: one bisection step below it the plan falls short of the budget
    cfg = load_config(REPO / CONFIG, {k: parse_value(v) for k, v in (o.split("=", 1) for o in [*_options(tiny_data), *budget])})
    pipeline = PrunePipeline(cfg, ssd, work)
    sparse = load_detector(work / "sparse.pth")
    layers = resolve_layer_set(sparse, "all")
    sample = torch.cat([w.abs().flatten() for w in effective_weights(sparse, layers, True)]).detach()
    found = pipeline._budget_threshold(sparse, layers, sample, {"params": target}, steps=10)
    below = float(torch.quantile(sample, found["quantile"] - 2.0 ** -10))
    plan_below = pipeline._singh_plan(sparse, layers, below)
    assert plan_below.params_before / plan_below.params_after < target <= found["param_ratio"]

    # a budget the selection cannot reach (every conv keeps min_keep filters) is refused, naming the option
    proc = _prune(ssd, work, tiny_data, "--stage", "sweep", options=("prune.sweep.target_param_ratio=1000",), ok=False)
    assert proc.returncode == 2 and "target_param_ratio=1000" in proc.stderr and "Traceback" not in proc.stderr
    # a FLOPs budget as well: the threshold meets both (the larger cut decides)
    both = pipeline._budget_threshold(sparse, layers, sample, {"params": target, "flops": found["flop_ratio"] * 1.2}, steps=10)
    assert both["param_ratio"] >= target and both["flop_ratio"] >= found["flop_ratio"] * 1.2 and both["threshold"] > found["threshold"]
    # the sweep now depends on the selection: a changed select is not silently reused
    proc = _prune(ssd, work, tiny_data, options=(*budget, "prune.select.out_fraction=0.5"), ok=False)
    assert proc.returncode == 2 and "sweep.json was made with other settings" in proc.stderr and "prune.select" in proc.stderr


def test_singh_per_layer_threshold_for_a_parameter_budget(ssd, tiny_data, tmp_path):
    """prune.sweep.scope=layer: the budget's threshold is one quantile of every conv's own magnitudes, the plan is
    Singh's selection after zeroing that fraction of each conv, and magnitudes given as thresholds are refused."""
    from detkd.config import load_config, parse_value
    from detkd.prune.groups import resolve_layer_set
    from detkd.prune.pipeline import PrunePipeline
    from detkd.prune.sparsity import layer_thresholds

    work, target = tmp_path / "singh_layer", 2.5
    budget = ("prune.sweep.scope=layer", f"prune.sweep.target_param_ratio={target}")
    out = _prune(ssd, work, tiny_data, "--stage", "sparsity", "sweep", "plan", options=budget).stdout
    assert "[prune] per-layer quantile" in out
    sweep = json.loads((work / "sweep.json").read_text())
    chosen = sweep["chosen"]
    assert sweep["scope"] == "layer" and chosen == sweep["rows"][1] and 0.0 < chosen["threshold"] == chosen["quantile"] < 1.0
    plan = json.loads((work / "plan.json").read_text())
    assert plan["options"]["threshold"] == chosen["threshold"] and plan["options"]["threshold_scope"] == "layer"
    assert plan["params_before"] / plan["params_after"] == pytest.approx(chosen["param_ratio"]) and chosen["param_ratio"] >= target

    # the plan is Singh's selection on the model with each conv's own smallest fraction zeroed: computed here again
    cfg = load_config(REPO / CONFIG, {k: parse_value(v) for k, v in (o.split("=", 1) for o in [*_options(tiny_data), *budget])})
    pipeline = PrunePipeline(cfg, ssd, work)
    sparse = load_detector(work / "sparse.pth")
    layers = resolve_layer_set(sparse, "all")
    again = pipeline._singh_plan(sparse, layers, chosen["threshold"])
    assert {x.name: x.removed for x in again.layers if x.removed} == {x["name"]: x["removed"] for x in plan["layers"] if x["removed"]}
    # each conv's threshold is its own: the quantile zeroes (about) that fraction of every conv
    thresholds = layer_thresholds(sparse, layers, chosen["threshold"])
    assert len(set(thresholds.values())) > 1
    # the smallest such quantile: one bisection step below it the plan falls short of the budget
    found = pipeline._budget_threshold(sparse, layers, None, {"params": target}, steps=10)
    below = pipeline._singh_plan(sparse, layers, found["quantile"] - 2.0 ** -10)
    assert below.params_before / below.params_after < target <= found["param_ratio"] and found["threshold"] == found["quantile"]

    # magnitudes as thresholds mean nothing per layer: refused in one line, naming both options
    proc = _prune(ssd, work, tiny_data, "--stage", "sweep", options=("prune.sweep.scope=layer", "prune.sweep.thresholds=[0.01]"),
                  ok=False)
    assert proc.returncode == 2 and "prune.sweep.thresholds" in proc.stderr and "prune.sweep.scope=layer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    proc = _prune(tmp_path / "nope.pth", tmp_path / "w", tiny_data, ok=False)
    assert proc.returncode == 2 and "nope.pth" in proc.stderr and "Traceback" not in proc.stderr
