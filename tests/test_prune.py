"""Pruning library: layer sets and consumers, importance criteria, Singh selection, plans, surgery,
pruned checkpoints and ONNX export."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detkd.engine.checkpoint import CheckpointError, load_detector, save_detector
from detkd.models.factory import build_model
from detkd.prune.groups import Consumer, PruningGraph, layer_sets, resolve_layer_set
from detkd.prune.importance import L1Importance, SinghImportance, TaylorImportance, singh_selection, zero_fractions
from detkd.options import PruneOptions
from detkd.prune.pruner import PlanError, PruningPlan, apply_plan, make_plan, plan_by_ratio
from detkd.prune.sparsity import SparsityModel, choose_threshold, weight_sparsity, zero_below

CLASSES = ["a", "b", "c"]
C43 = "backbone.features.conv4_3.0"


def tiny_ssd(seed: int = 0, imgsz: int = 64):
    torch.manual_seed(seed)
    return build_model("ssd_cpu", class_names=CLASSES, imgsz=imgsz, width=0.125).eval()


def targets(batch: int = 2) -> list[dict]:
    return [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0]]), "labels": torch.tensor([0, 2])}] * batch


def test_ssd_cpu_layer_sets_and_consumers_of_conv4_3_fc7_and_last_extra():
    model = tiny_ssd()
    sets = layer_sets(model)
    assert sets["all"] == sets["vgg"] + sets["stage5"] + sets["extra"]
    assert len(sets["vgg"]) == 10 and len(sets["stage5"]) == 5 and sets["vgg"][-1] == C43
    graph = PruningGraph(model)
    # conv4_3 feeds L2Norm -> head conv 0, and pool4 -> conv5_1 (the module docstring of ssd_vgg).
    assert set(graph.consumers(C43)) == {
        Consumer(C43, "out"), Consumer("backbone.features.conv4_3.1", "out"), Consumer("backbone.l2norm.weight", "out"),
        Consumer("head.classification_head.module_list.0", "in"), Consumer("head.regression_head.module_list.0", "in"),
        Consumer("backbone.extra.0.conv5_1.0", "in"),
    }
    assert set(graph.consumer_convs("backbone.extra.0.fc7.0")) == {
        "head.classification_head.module_list.1", "head.regression_head.module_list.1", "backbone.extra.1.conv8_1.0"}
    last = sets["extra"][-1]
    assert {c.name for c in graph.consumers(last) if c.kind == "in"} == {
        f"head.classification_head.module_list.{len(model.backbone.out_channels) - 1}",
        f"head.regression_head.module_list.{len(model.backbone.out_channels) - 1}"}


@pytest.mark.parametrize("name,imgsz", [("ssd_cpu", 96), ("ssd300_vgg16", 300), ("ssdlite320_mobilenet_v3_large", 320)])
def test_removing_one_filter_of_every_conv_shrinks_every_consumer_and_forward_runs(name, imgsz):
    torch.manual_seed(0)
    kwargs = {"width": 0.125} if name == "ssd_cpu" else {}
    model = build_model(name, class_names=CLASSES, imgsz=imgsz, **kwargs).eval()
    x = torch.rand(1, 3, imgsz, imgsz)
    with torch.no_grad():
        before = {k: v.shape for k, v in model(x).items()}
    convs = resolve_layer_set(model, "all")
    graph = PruningGraph(model)
    readers = {n: graph.consumer_convs(n) for n in convs}
    in_before = {m: model.get_submodule(m).in_channels for n in convs for m in readers[n]}
    out_before = {n: model.get_submodule(n).out_channels for n in convs}
    plan = PruningPlan(name, imgsz, [])
    from detkd.prune.pruner import LayerPlan

    plan.layers = [LayerPlan(n, out_before[n], [0]) for n in convs]
    apply_plan(model, plan, graph)
    for n in convs:
        assert model.get_submodule(n).out_channels == out_before[n] - 1, n
    expected_in = dict(in_before)
    for n in convs:
        for m in readers[n]:
            expected_in[m] -= 1 if model.get_submodule(m).groups == 1 else 0
    for m, channels in expected_in.items():
        conv = model.get_submodule(m)
        assert conv.in_channels == (conv.out_channels if conv.groups > 1 else channels), m
    with torch.no_grad():
        after = {k: v.shape for k, v in model(x).items()}
    assert after == before  # same default boxes, same classes: only the inside got thinner


def test_l1_and_taylor_rank_weakened_filters_lowest():
    model = tiny_ssd()
    graph = PruningGraph(model)
    conv = graph.conv(C43)
    with torch.no_grad():
        conv.weight[5] *= 0.01
    assert int(L1Importance()(graph, C43).argmin()) == 5
    # Taylor: a filter whose activation is always zero (BN scale and shift 0) has score 0.
    bn = model.get_submodule("backbone.features.conv4_3.1")
    with torch.no_grad():
        bn.bias.fill_(1.0)  # every other channel active (no dead ReLUs at random init)
        bn.weight[9] = 0.0
        bn.bias[9] = 0.0
    torch.manual_seed(1)
    batches = [(torch.rand(2, 3, 64, 64), targets()) for _ in range(2)]
    taylor = TaylorImportance().collect(model, [C43, "backbone.extra.0.fc7.0"], batches,
                                        lambda det, b: sum(det.loss(det(b[0]), b[1]).values()))
    scores = taylor(graph, C43)
    assert int(scores.argmin()) == 9 and float(scores[9]) == 0.0
    assert torch.isclose(scores.norm(), torch.tensor(1.0))  # layer-normalised
    assert taylor.images == 4
    assert all(p.grad is None for p in model.parameters())  # statistics only, no leftover gradients


def test_singh_selection_on_a_crafted_sparse_model_picks_exactly_the_expected_filters():
    model = tiny_ssd()
    graph = PruningGraph(model)
    name = "backbone.features.conv3_3.0"  # read by conv4_1 only (after pool3)
    conv, reader = graph.conv(name), graph.conv("backbone.features.conv4_1.0")
    with torch.no_grad():
        conv.weight[3] = 0.0  # filter 3 entirely zero -> out_frac 1
        reader.weight[:, 5] = 0.0  # nobody reads channel 5 -> in_frac 1
        w = conv.weight[7].flatten()
        w[: w.numel() // 2] = 0.0  # half zero: below any sensible fraction
        conv.weight[7] = w.view_as(conv.weight[7])
        conv.weight[11] = 0.0  # both zero -> picked by "and" too
        reader.weight[:, 11] = 0.0
    out_frac, in_frac = zero_fractions(graph, name)
    assert out_frac[3] == 1.0 and in_frac[5] == 1.0 and abs(float(out_frac[7]) - 0.5) < 0.06
    assert singh_selection(graph, [name], 0.9, 0.9, "or")[name] == [3, 5, 11]
    assert singh_selection(graph, [name], 0.9, 0.9, "and")[name] == [11]
    assert singh_selection(graph, [name], 0.4, 1.1, "or")[name] == [3, 7, 11]
    assert float(SinghImportance()(graph, name)[3]) == 0.0
    # min_keep: a conv never loses everything.
    with torch.no_grad():
        conv.weight.zero_()
    assert len(singh_selection(graph, [name], 0.9, 0.9, "or", min_keep=4)[name]) == conv.out_channels - 4


def test_plan_by_ratio_layer_and_global_scopes_keep_min_filters():
    model = tiny_ssd()
    graph = PruningGraph(model)
    names = ["backbone.features.conv1_1.0", C43]
    removed = plan_by_ratio(graph, names, L1Importance(), 0.5, "layer", min_keep=2)
    assert {n: len(v) for n, v in removed.items()} == {names[0]: 4, C43: 32}
    scores = {names[0]: torch.arange(8.0), C43: torch.arange(64.0) + 100}  # all of conv1_1 ranks lowest

    def fixed(graph, name):
        return scores[name]

    removed = plan_by_ratio(graph, names, fixed, 0.1, "global", min_keep=2)  # 7 of 72 filters, all from conv1_1
    assert removed == {names[0]: [0, 1, 2, 3, 4, 5], C43: []}  # min_keep 2 stops at 6
    with pytest.raises(ValueError):
        plan_by_ratio(graph, names, L1Importance(), 1.0)


def test_plan_json_round_trip_and_apply_checks(tmp_path):
    model = tiny_ssd()
    plan = make_plan(model, {C43: [1, 2, 3], "backbone.extra.0.fc7.0": [0]}, "l1", ratio=0.1)
    assert plan.params_after < plan.params_before and plan.flops_after < plan.flops_before
    path = tmp_path / "plan.json"
    plan.save(path)
    data = json.loads(path.read_text())
    assert data["layers"][0]["kept"] == [i for i in range(64) if i not in (1, 2, 3)]
    loaded = PruningPlan.load(path)
    assert loaded == plan
    pruned = apply_plan(copy.deepcopy(model), loaded)
    assert pruned.get_submodule(C43).out_channels == 61
    from detkd.engine.benchmark import count_params

    assert count_params(pruned) == plan.params_after
    with pytest.raises(PlanError, match="already applied"):
        apply_plan(pruned, loaded)
    bad = copy.deepcopy(data)
    bad["layers"][0]["removed"] = [64]
    path.write_text(json.dumps(bad))
    with pytest.raises(PlanError, match="outside 0..63"):
        apply_plan(copy.deepcopy(model), PruningPlan.load(path))
    bad["layers"][0]["removed"] = list(range(64))
    path.write_text(json.dumps(bad))
    with pytest.raises(PlanError, match="removes all 64"):
        apply_plan(copy.deepcopy(model), PruningPlan.load(path))
    bad["layers"][0]["name"] = "backbone.l2norm"
    path.write_text(json.dumps(bad))
    with pytest.raises(PlanError, match="not a Conv2d"):
        apply_plan(copy.deepcopy(model), PruningPlan.load(path))
    path.write_text("{not json")
    with pytest.raises(PlanError, match=r"plan\.json: invalid JSON"):
        PruningPlan.load(path)
    path.write_text(json.dumps({"method": "l1"}))
    with pytest.raises(PlanError, match="not a pruning plan"):
        PruningPlan.load(path)


def test_pruned_checkpoint_reloads_without_config_and_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    from detkd.export.onnx import export_onnx, flatten_outputs

    model = tiny_ssd()
    graph = PruningGraph(model)
    removed = plan_by_ratio(graph, resolve_layer_set(model, "all"), L1Importance(), 0.6, min_keep=2)
    pruned = apply_plan(model, make_plan(copy.deepcopy(model), removed, "l1"), graph)
    path = save_detector(pruned, tmp_path / "pruned.pth")
    loaded = load_detector(path).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = pruned(x)
        assert all(torch.equal(loaded(x)[k], expected[k]) for k in expected)
    assert loaded.detkd_pruned["plans"][0]["method"] == "l1"
    export_onnx(loaded, tmp_path / "pruned.onnx", 64)  # checks parity itself; and here by hand:
    session = ort.InferenceSession(str(tmp_path / "pruned.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x[:1].numpy()})
    with torch.no_grad():
        want, _ = flatten_outputs(loaded(x[:1]))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)
    # Pruned weights in a checkpoint that does not say so are a mismatch, not silently reshaped.
    state = torch.load(path, weights_only=True)
    del state["meta"]["detkd"]["pruned"]
    torch.save(state, tmp_path / "unmarked.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_detector(tmp_path / "unmarked.pth")


def test_sparsity_loss_threshold_and_choice():
    model = tiny_ssd()
    layers = ["backbone.features.conv1_1.0", C43]
    wrapped = SparsityModel(model, layers, weight=0.5, fold_bn=False)  # raw weights (BN folding: next test)
    losses = wrapped(torch.rand(2, 3, 64, 64), targets(), mode="loss")
    l1 = sum(model.get_submodule(n).weight.abs().sum() for n in layers)
    assert torch.isclose(losses["loss_sparsity"], 0.5 * l1)
    assert set(losses) == {"loss_box", "loss_cls", "loss_sparsity", "filters_empty"}
    with pytest.raises(AttributeError):
        SparsityModel(model, ["backbone.nope"], 1.0)
    weights = torch.cat([model.get_submodule(n).weight.detach().abs().flatten() for n in layers])
    threshold = float(weights.median())
    fraction = zero_below(model, layers, threshold, fold_bn=False)
    assert fraction == weight_sparsity(model, layers)
    assert fraction == int((weights < threshold).sum()) / weights.numel()
    rows = [{"threshold": 0.0, "mAP50": 0.50}, {"threshold": 0.1, "mAP50": 0.495}, {"threshold": 0.2, "mAP50": 0.47},
            {"threshold": 0.3, "mAP50": 0.2}]
    assert choose_threshold(rows, 0.01)["threshold"] == 0.1
    assert choose_threshold(rows, 0.05)["threshold"] == 0.2


def test_prune_options_are_checked():
    opts = PruneOptions.from_dict({"method": "taylor", "ratio": 0.3, "sweep": {"max_drop": 0.02}})
    assert opts.stages == ("plan", "apply", "retrain", "report") and opts.sweep.max_drop == 0.02
    assert PruneOptions.from_dict(None).stages[0] == "sparsity"
    for bad, match in [({"method": "random"}, "prune.method"), ({"ratio": 1.0}, "prune.ratio"),
                       ({"sparsity": {"epoch": 3}}, "unknown config key prune.sparsity.epoch"), ({"scope": "net"}, "prune.scope")]:
        with pytest.raises(ValueError, match=match):
            PruneOptions.from_dict(bad)
    model = tiny_ssd()
    with pytest.raises(ValueError, match="unknown layer set"):
        resolve_layer_set(model, "heads")
    with pytest.raises(ValueError, match="not a prunable conv"):
        resolve_layer_set(model, ["head.classification_head.module_list.0"])


def test_bn_folded_magnitudes_drive_penalty_and_threshold():
    from detkd.prune.sparsity import effective_weights

    model = tiny_ssd()
    bn = model.get_submodule("backbone.features.conv4_3.1")
    with torch.no_grad():
        bn.running_var.fill_(4.0 - bn.eps)  # sqrt(var + eps) = 2
        bn.weight.fill_(-0.5)  # |gamma| / 2 = 0.25
    conv = model.get_submodule(C43)
    folded = effective_weights(model, [C43, "backbone.extra.1.conv8_1.0"])
    assert torch.allclose(folded[0], conv.weight * 0.25)
    assert torch.equal(folded[1], model.get_submodule("backbone.extra.1.conv8_1.0").weight)  # no BN in the extra layers
    wrapped = SparsityModel(model, [C43], weight=2.0)
    losses = wrapped(torch.rand(2, 3, 64, 64), targets(), mode="loss")
    assert torch.isclose(losses["loss_sparsity"], 2.0 * 0.25 * conv.weight.abs().sum())
    losses["loss_sparsity"].backward()
    assert bn.weight.grad is not None and bool((bn.weight.grad < 0).all())  # |gamma| shrinks: gamma < 0 grows toward 0
    magnitude = conv.weight.detach().abs() * 0.25
    threshold = float(magnitude.median())
    expected = int((magnitude < threshold).sum())
    zero_below(model, [C43], threshold)
    assert int((conv.weight == 0).sum()) == expected
    # a filter emptied through its BN scale (gamma = 0, raw weights not zero) is zeroed at threshold 0, so Singh's
    # selection, which reads raw zeros, sees it; the other filters are left as they are
    with torch.no_grad():
        conv.weight.copy_(torch.rand_like(conv.weight) + 0.1)
        bn.weight[[1, 4]] = 0.0
    zero_below(model, [C43], 0.0)
    zeros = (conv.weight == 0).flatten(1).all(dim=1)
    assert zeros.nonzero().flatten().tolist() == [1, 4] and int((conv.weight == 0).sum()) == 2 * conv.weight[0].numel()
    graph = PruningGraph(model)
    assert singh_selection(graph, [C43], 0.9, 0.9, "or", 1)[C43] == [1, 4]


def test_layer_scope_thresholds_thin_every_conv_alike_where_a_global_one_empties_the_small_conv():
    """One conv whose weights are all smaller than another's: a global threshold at the large conv's smallest
    magnitude zeroes all of the small conv and none of the large one; the per-layer quantile 0.5 zeroes exactly half
    of each (distinct magnitudes)."""
    from detkd.prune.sparsity import layer_thresholds, resolve_threshold

    model = tiny_ssd()
    small, large = "backbone.extra.1.conv8_1.0", "backbone.extra.1.conv8_2.0"  # no BatchNorm: raw magnitudes
    layers = [small, large]
    sizes = {n: model.get_submodule(n).weight.numel() for n in layers}
    assert sizes[small] != sizes[large]  # the quantile is each conv's own
    scale = {small: 1.0 / 2 ** 13, large: 1.0}  # small: magnitudes (1..n) / 8192 < 1 (n = 4096); large: 1..n
    with torch.no_grad():
        for name in layers:
            w = model.get_submodule(name).weight
            w.copy_((torch.randperm(w.numel(), generator=torch.Generator().manual_seed(1)).float() + 1).view_as(w) * scale[name])
    glob = copy.deepcopy(model)
    zero_below(glob, layers, resolve_threshold(glob, layers, 1.0, "global"))
    assert int((glob.get_submodule(small).weight == 0).sum()) == sizes[small]
    assert int((glob.get_submodule(large).weight == 0).sum()) == 0
    thresholds = layer_thresholds(model, layers, 0.5)
    assert thresholds == resolve_threshold(model, layers, 0.5, "layer")
    # magnitudes 1..n (times the scale): the floor(n / 2)-th smallest is floor(n / 2) + 1, and exactly floor(n / 2) lie below it
    assert all(thresholds[n] == (sizes[n] // 2 + 1) * scale[n] for n in layers)
    fraction = zero_below(model, layers, thresholds)
    for name in layers:
        assert int((model.get_submodule(name).weight == 0).sum()) == sizes[name] // 2
    assert fraction == pytest.approx((sizes[small] // 2 + sizes[large] // 2) / (sizes[small] + sizes[large]))
    # quantile 1 zeroes everything, 0 nothing (no weight is exactly zero)
    assert zero_below(copy.deepcopy(model), layers, layer_thresholds(model, layers, 1.0)) == 1.0
    fresh = tiny_ssd()
    assert zero_below(fresh, layers, layer_thresholds(fresh, layers, 0.0)) == 0.0
    with pytest.raises(ValueError, match="scope"):
        resolve_threshold(model, layers, 0.5, "net")
    with pytest.raises(ValueError, match="prune.sweep.scope"):
        PruneOptions.from_dict({"sweep": {"scope": "net"}})


def test_a_finished_stage_made_with_other_settings_is_refused_not_reused(tmp_path):
    """Stale artefacts: plan.json made at ratio 0.5 is not silently reused for ratio 0.7."""
    from detkd.config import load_config
    from detkd.errors import RunStateError
    from detkd.prune.pipeline import PrunePipeline

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "prune" / "ssd_cpu_synthetic.py",
                      {"prune.method": "l1", "prune.ratio": 0.7})
    work, ckpt = tmp_path / "w", tmp_path / "model.pth"
    work.mkdir()
    made = PrunePipeline.__new__(PrunePipeline)  # the settings a ratio-0.5 run recorded
    made.opts = PruneOptions.from_dict({**dict(cfg.prune), "ratio": 0.5})
    (work / "pipeline.json").write_text(json.dumps({"checkpoint": str(ckpt.resolve()), "method": "l1",
                                                    "stages": {"plan": made._stage_settings("plan")}}))
    (work / "plan.json").write_text("{}")
    pipeline = PrunePipeline(cfg, ckpt, work)
    with pytest.raises(RunStateError, match=r"plan.json was made with other settings \(prune.ratio 0.5 -> 0.7\)"):
        pipeline.run()
