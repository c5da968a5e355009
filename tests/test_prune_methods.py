"""Pruning that pays: sparsity kinds, channel rounding, the latency table and latency-aware plans,
SSD -> SSD distillation for retraining."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from detkd.engine.benchmark import count_flops
from detkd.engine.hooks import AfterStepHook, EpochSeedHook
from detkd.losses.ssd_distill import ssd_output_distill
from detkd.models.factory import build_model
from detkd.prune.groups import PruningGraph
from detkd.prune.importance import L1Importance
from detkd.prune.latency import filter_flops, latency_slopes, measure_latency_table, plan_by_latency, round_removal
from detkd.prune.pruner import apply_plan, make_plan, plan_by_ratio
from detkd.prune.retrain import SSDDistillModel
from detkd.prune.sparsity import (SparsityModel, cost_weights, empty_filter_fraction, filter_norms, l1_matched_weight,
                                  proximal_step, sparsity_penalty)

C43 = "backbone.features.conv4_3.0"


def tiny_ssd(seed: int = 0, imgsz: int = 64) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("ssd_cpu", class_names=["a", "b"], imgsz=imgsz, width=0.125).eval()


def _targets(batch: int = 2) -> list[dict]:
    return [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([i % 2])} for i in range(batch)]


class _Crafted(nn.Module):
    """One conv-BN-ReLU block of 8 filters whose output is read only through filters 0..3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)[:, :4]


def _train_with_penalty(kind: str, steps: int = 400) -> _Crafted:
    """Fit the used filters 0..3 to a fixed conv's output while ``kind``'s penalty acts on all 8
    (cosine-decayed SGD; BatchNorm in eval mode with unit statistics, so the block is W * gamma)."""
    model = _Crafted().eval()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, 8, 8, generator=generator)
    reference = torch.randn(4, 3, 3, 3, generator=generator)
    target = torch.relu(torch.nn.functional.conv2d(x, reference, padding=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - target).pow(2).mean() + 0.2 * sparsity_penalty(model, ["block.0"], kind)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@pytest.mark.parametrize("kind", ["group", "bn_scale"])
def test_group_and_bn_scale_penalties_empty_exactly_the_unused_filters(kind):
    model = _train_with_penalty(kind)
    norms = filter_norms(model, ["block.0"])[0].detach()
    unused, used = norms[4:], norms[:4]
    assert float(unused.max()) < 1e-2 * float(used.min()), (kind, norms)
    assert empty_filter_fraction(model, ["block.0"]) == 0.5
    if kind == "bn_scale":  # network slimming switches the channels off through their BN scales
        gamma = model.block[1].weight.detach().abs()
        assert float(gamma[4:].max()) < 1e-2 * float(gamma[:4].min())


def test_penalties_by_hand():
    model = _Crafted().eval()
    conv, bn = model.block[0], model.block[1]
    with torch.no_grad():
        conv.weight.fill_(0.5)  # every filter: 27 weights of 0.5 -> L1 13.5, L2 sqrt(27) / 2
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]))
        bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) = 1: folded = W * |gamma|
    scale = torch.tensor([1.0, 2.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert sparsity_penalty(model, ["block.0"], "l1").item() == pytest.approx(13.5 * float(scale.sum()), rel=1e-5)
    assert sparsity_penalty(model, ["block.0"], "group").item() == pytest.approx(27 ** 0.5 / 2 * float(scale.sum()), rel=1e-5)
    assert sparsity_penalty(model, ["block.0"], "bn_scale").item() == pytest.approx(7.5)
    assert empty_filter_fraction(model, ["block.0"]) == 1 / 8  # the filter behind gamma = 0
    with pytest.raises(ValueError, match="sparsity kind"):
        sparsity_penalty(model, ["block.0"], "l2")


def test_l1_matched_weight_pulls_each_filter_as_hard_as_l1():
    model = _Crafted().eval()
    conv, bn = model.block[0], model.block[1]
    with torch.no_grad():
        conv.weight.fill_(0.5)  # 27 weights per filter; folded L1 per filter 13.5 * |gamma|
        bn.weight.copy_(torch.tensor([1.0, -2.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]))
        bn.running_var.fill_(1.0 - bn.eps)
    assert l1_matched_weight(model, ["block.0"], "l1", 1e-3) == 1e-3
    group = l1_matched_weight(model, ["block.0"], "group", 1e-3)
    assert group == pytest.approx(1e-3 * 27 ** 0.5, rel=1e-6)
    assert l1_matched_weight(model, ["block.0"], "bn_scale", 1e-3) == pytest.approx(1e-3 * 13.5, rel=1e-6)  # 13.5*7.5 / 7.5

    def pull(kind: str, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        (weight * sparsity_penalty(model, ["block.0"], kind)).backward()
        weights = conv.weight.grad if conv.weight.grad is not None else torch.zeros_like(conv.weight)
        return weights.flatten(1).norm(dim=1), bn.weight.grad.abs().clone()

    l1_w, l1_gamma = pull("l1", 1e-3)
    group_w, _ = pull("group", group)
    live = torch.tensor([1.0, 2.0, 0.0, 0.5, 1, 1, 1, 1]) > 0
    assert torch.allclose(group_w[live], l1_w[live], rtol=1e-5)  # the same pull on every filter's weights
    _, bn_gamma = pull("bn_scale", l1_matched_weight(model, ["block.0"], "bn_scale", 1e-3))
    assert torch.allclose(bn_gamma, l1_gamma, rtol=1e-5)  # ... and on every BN scale
    with pytest.raises(ValueError, match="sparsity kind"):
        l1_matched_weight(model, ["block.0"], "l2", 1e-3)


def test_growing_penalty_follows_the_epoch_the_runner_reports():
    model = tiny_ssd()
    wrapped = SparsityModel(model, [C43], weight=0.1, fold_bn=False, kind="group", growth=1.5)
    first = wrapped(torch.rand(2, 3, 64, 64), _targets(), mode="loss")
    assert set(first) == {"loss_box", "loss_cls", "loss_sparsity", "filters_empty"}
    EpochSeedHook().before_train_epoch(SimpleNamespace(model=wrapped, epoch=2, rank=0,
                                                       train_dataloader=SimpleNamespace(dataset=object())))
    assert wrapped.current_weight == pytest.approx(0.1 * 1.5 ** 2)
    later = wrapped(torch.rand(2, 3, 64, 64), _targets(), mode="loss")
    assert later["loss_sparsity"].item() == pytest.approx(2.25 * first["loss_sparsity"].item(), rel=1e-5)


def _crafted_by_hand() -> _Crafted:
    """The crafted block with filter o's 27 weights all equal to ``o + 1`` (norm ``(o + 1) * sqrt(27)``),
    BN scales ``gamma`` and ``sqrt(var + eps) = 2`` (folded = W * |gamma| / 2)."""
    model = _Crafted().eval()
    with torch.no_grad():
        model.block[0].weight.copy_(torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 3, 3))
        model.block[1].weight.copy_(torch.tensor([1.0, -2.0, 0.0, 0.5, 0.1, -0.1, 0.3, 4.0]))
        model.block[1].running_var.fill_(4.0 - model.block[1].eps)
    return model


def test_proximal_steps_by_hand():
    gamma = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.1, -0.1, 0.3, 4.0])
    # bn_scale: |gamma| shrinks by the step, exactly to zero below it; the conv is not touched
    model = _crafted_by_hand()
    proximal_step(model, ["block.0"], "bn_scale", 0.25)
    assert torch.allclose(model.block[1].weight, torch.tensor([0.75, -1.75, 0.0, 0.25, 0.0, 0.0, 0.05, 3.75]))
    assert torch.equal(model.block[0].weight[:, 0, 0, 0], torch.arange(1.0, 9.0))
    # group (BN-folded): every filter's folded norm (o+1) * sqrt(27) * |gamma_o| / 2 shrinks by the step, through gamma
    model = _crafted_by_hand()
    before = filter_norms(model, ["block.0"])[0].detach()
    assert torch.allclose(before, torch.arange(1.0, 9.0) * 27 ** 0.5 * gamma.abs() / 2)
    proximal_step(model, ["block.0"], "group", 2.0)
    after = filter_norms(model, ["block.0"])[0].detach()
    assert torch.allclose(after, (before - 2.0).clamp_min(0.0), atol=1e-6)
    assert torch.equal(after == 0, before <= 2.0)  # emptied: gamma 0, 0.1, -0.1 (norms 0, 1.30, 1.56)
    assert torch.equal(model.block[1].weight == 0, before <= 2.0)
    assert torch.equal(model.block[0].weight[:, 0, 0, 0], torch.arange(1.0, 9.0))  # W's scale behind BN is not the filter's
    assert torch.equal(model.block[1].weight.sign()[after > 0], gamma.sign()[after > 0])
    # group on raw weights (no folding): W_o shrinks by the step in norm
    model = _crafted_by_hand()
    proximal_step(model, ["block.0"], "group", 27 ** 0.5 * 1.5, fold_bn=False)
    assert torch.allclose(model.block[0].weight.flatten(1).norm(dim=1), (torch.arange(1.0, 9.0) - 1.5).clamp_min(0) * 27 ** 0.5)
    # l1 (BN-folded): every folded weight (o+1) * |gamma_o| / 2 is soft-thresholded by the step
    model = _crafted_by_hand()
    proximal_step(model, ["block.0"], "l1", 0.3)
    folded = (torch.arange(1.0, 9.0) * gamma.abs() / 2 - 0.3).clamp_min(0.0)
    assert torch.allclose(filter_norms(model, ["block.0"])[0].detach(), folded * 27 ** 0.5, atol=1e-5)
    assert model.block[0].weight[2, 0, 0, 0] == 3.0  # behind gamma = 0 the weights are left alone
    with pytest.raises(ValueError, match="sparsity kind"):
        proximal_step(model, ["block.0"], "l2", 0.1)
    with pytest.raises(ValueError, match="step"):
        proximal_step(model, ["block.0"], "group", -1.0)


def _train_with_proximal_adam(kind: str, weight: float, steps: int = 120, lr: float = 0.02) -> _Crafted:
    """As :func:`_train_with_penalty`, but with Adam and the penalty as a proximal step of ``lr * weight``
    after every optimizer step (through :class:`SparsityModel` and :class:`AfterStepHook`)."""
    model = _Crafted().eval()
    wrapped = SparsityModel(model, ["block.0"], weight=weight, kind=kind, proximal=True)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, 8, 8, generator=generator)
    target = torch.relu(torch.nn.functional.conv2d(x, torch.randn(4, 3, 3, 3, generator=generator), padding=1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    runner = SimpleNamespace(model=wrapped, optim_wrapper=SimpleNamespace(get_lr=lambda: {"lr": [opt.param_groups[0]["lr"]]}))
    for _ in range(steps):
        opt.zero_grad()
        (model(x) - target).pow(2).mean().backward()
        opt.step()
        AfterStepHook().after_train_iter(runner, 0)
    return model


@pytest.mark.parametrize("kind", ["group", "bn_scale"])
def test_proximal_step_under_adam_empties_exactly_the_unused_filters(kind):
    model = _train_with_proximal_adam(kind, weight=1.0)
    norms = filter_norms(model, ["block.0"])[0].detach()
    assert torch.all(norms[4:] == 0), norms  # exact zeros, not small values
    assert torch.all(norms[:4] > 0.1 * float(norms[:4].mean())), norms
    assert empty_filter_fraction(model, ["block.0"]) == 0.5


def test_gradient_penalty_under_adam_moves_a_filter_at_most_about_lr_per_step():
    """Why the gradient form empties nothing in a short Adam run: whatever lambda, |gamma| of an unused
    filter falls by at most about lr per step (here 0.02 x 30 steps), so it cannot reach zero."""
    model = _Crafted().eval()
    start = model.block[1].weight.detach().abs().clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30):
        opt.zero_grad()
        (100.0 * sparsity_penalty(model, ["block.0"], "bn_scale")).backward()
        opt.step()
    moved = start - model.block[1].weight.detach().abs()
    assert float(moved.max()) <= 0.02 * 30 * 1.01
    assert float(model.block[1].weight.detach().abs().min()) > 0.0


def test_proximal_sparsity_model_logs_the_penalty_and_steps_with_the_lr():
    model = tiny_ssd()
    wrapped = SparsityModel(model, [C43], weight=0.5, kind="bn_scale", growth=2.0, proximal=True)
    losses = wrapped(torch.rand(2, 3, 64, 64), _targets(), mode="loss")
    assert set(losses) == {"loss_box", "loss_cls", "sparsity_penalty", "filters_empty"}  # not a loss term: no gradient
    assert not losses["sparsity_penalty"].requires_grad
    bn = model.get_submodule("backbone.features.conv4_3.1")
    gamma = bn.weight.detach().clone()
    wrapped.set_epoch(1)
    wrapped.after_optimizer_step(0.01)  # step = lr * weight * growth ** epoch = 0.01
    assert torch.allclose(bn.weight.detach(), gamma.sign() * (gamma.abs() - 0.01).clamp_min(0))
    plain = SparsityModel(model, [C43], weight=0.5, kind="bn_scale")
    plain.after_optimizer_step(0.01)  # the gradient form never steps outside the optimizer
    assert torch.allclose(bn.weight.detach(), gamma.sign() * (gamma.abs() - 0.01).clamp_min(0))


def test_ssd_distill_loss_by_hand():
    teacher = {"cls_logits": torch.tensor([[[0.0, 0.0], [100.0, 0.0]]]),  # p_fg 0.5, then ~0 (background)
               "bbox_regression": torch.zeros(1, 2, 4)}
    same = ssd_output_distill(teacher, teacher)
    assert same["loss_kd_cls"].item() == pytest.approx(0.0, abs=1e-7) and same["loss_kd_box"].item() == 0.0
    moved_bg = {"cls_logits": teacher["cls_logits"].clone(), "bbox_regression": torch.zeros(1, 2, 4)}
    moved_bg["bbox_regression"][0, 1] = 5.0  # wrong boxes where the teacher sees background: no cost
    assert ssd_output_distill(moved_bg, teacher)["loss_kd_box"].item() == pytest.approx(0.0, abs=1e-12)
    moved_fg = {"cls_logits": teacher["cls_logits"].clone(), "bbox_regression": torch.zeros(1, 2, 4)}
    moved_fg["bbox_regression"][0, 0, 0] = 0.5  # smooth-L1(0.5) = 0.125, times p_fg 0.5, over max(1, sum p_fg) = 1
    assert ssd_output_distill(moved_fg, teacher)["loss_kd_box"].item() == pytest.approx(0.0625, rel=1e-5)
    student = {"cls_logits": torch.tensor([[[0.0, 2.0], [100.0, 0.0]]]), "bbox_regression": torch.zeros(1, 2, 4)}
    p_s = torch.tensor([0.0, 1.0]).softmax(-1)  # at tau 2: logits / 2
    kl = (0.5 * (torch.log(torch.tensor(0.5)) - p_s.log())).sum()  # teacher uniform at anchor 0; anchor 1 equal
    assert ssd_output_distill(student, teacher, tau=2.0)["loss_kd_cls"].item() == pytest.approx(4 * kl.item(), rel=1e-4)
    with pytest.raises(ValueError, match="default boxes"):
        ssd_output_distill({"cls_logits": torch.zeros(1, 3, 2), "bbox_regression": torch.zeros(1, 3, 4)}, teacher)


def test_ssd_distill_model_adds_terms_and_keeps_the_teacher_out():
    teacher = tiny_ssd()
    model = SSDDistillModel(copy.deepcopy(teacher), teacher)
    model.detector.eval()  # BN as the teacher's: the student equals the teacher
    losses = model(torch.rand(2, 3, 64, 64), _targets(), mode="loss")
    assert {"loss_box", "loss_cls", "loss_kd_cls", "loss_kd_box"} == set(losses)
    assert losses["loss_kd_cls"].item() == pytest.approx(0.0, abs=1e-5) and losses["loss_kd_box"].item() == pytest.approx(0.0, abs=1e-6)
    assert not any(k.startswith("teacher") for k in model.state_dict())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in teacher.parameters())


def test_round_to_keeps_multiples_and_consistent_consumers():
    model = tiny_ssd()
    graph = PruningGraph(model)
    names = [C43, "backbone.features.conv3_1.0", "backbone.extra.1.conv8_1.0"]
    removed = plan_by_ratio(graph, names, L1Importance(), 0.3, min_keep=2)
    channels = {n: graph.conv(n).out_channels for n in names}
    scores = {n: L1Importance()(graph, n) for n in names}
    rounded = round_removal(removed, channels, scores, 4)
    for name in names:
        kept = channels[name] - len(rounded[name])
        assert kept % 4 == 0 or kept == channels[name], (name, kept)
        assert set(rounded[name]) <= set(removed[name])  # only spares filters, never removes others
        spared = set(removed[name]) - set(rounded[name])
        if spared:  # the spared ones are the best-scoring of those chosen
            assert min(scores[name][sorted(spared)]) >= max(scores[name][rounded[name]], default=-1)
    pruned = apply_plan(model, make_plan(model, rounded, "l1"))
    pruned_graph = PruningGraph(pruned)
    for name in names:
        out = pruned_graph.conv(name).out_channels
        assert out % 4 == 0 or out == channels[name]
        for consumer in pruned_graph.consumer_convs(name):
            assert pruned_graph.conv(consumer).in_channels == out
    with torch.no_grad():
        pruned(torch.rand(1, 3, 64, 64))
    assert round_removal({"c": [0, 1, 2]}, {"c": 16}, {"c": torch.arange(16.0)}, 8) == {"c": []}  # 13 kept -> 16


def test_latency_aware_plan_on_a_crafted_table():
    model = tiny_ssd()
    graph = PruningGraph(model)
    a, b = C43, "backbone.features.conv3_1.0"
    for name in (a, b):
        with torch.no_grad():
            graph.conv(name).weight.fill_(0.1)  # equal importance for every filter
    ca, cb = graph.conv(a).out_channels, graph.conv(b).out_channels
    table = {"layers": {a: {"channels": [ca // 2, ca], "ms": [1.0, 1.0 + ca / 2 * 1.0]},  # 1 ms per filter
                        b: {"channels": [cb // 2, cb], "ms": [1.0, 1.0 + cb / 2 * 0.01]}}}  # 0.01 ms per filter
    assert latency_slopes(table, [a, b]) == pytest.approx({a: 1.0, b: 0.01})
    removed = plan_by_latency(graph, [a, b], L1Importance(), table, ratio=4 / (ca + cb), min_keep=2)
    assert len(removed[a]) == 4 and removed[b] == []  # every removal where it saves time
    # Importance still counts: make a's filters 1000x more important and b's go first.
    with torch.no_grad():
        graph.conv(b).weight.fill_(0.1)
        graph.conv(a).weight[: ca // 2].fill_(100.0)
    removed = plan_by_latency(graph, [a, b], L1Importance(), table, ratio=4 / (ca + cb), min_keep=2)
    assert len(removed[a]) == 4 and all(i >= ca // 2 for i in removed[a])  # only a's unimportant half


def test_latency_table_is_measured_with_onnxruntime():
    model = tiny_ssd()
    names = [C43, "backbone.extra.1.conv8_1.0"]
    table = measure_latency_table(model, names, threads=1, multiple=4, points=2, iters=2)
    assert table["imgsz"] == 64 and table["multiple"] == 4 and set(table["layers"]) == set(names)
    for name in names:
        row = table["layers"][name]
        full = model.get_submodule(name).out_channels
        assert max(row["channels"]) == full and all(c % 4 == 0 or c == full for c in row["channels"])
        assert len(row["ms"]) == len(row["channels"]) and all(t > 0 for t in row["ms"])


class _TwoRes(nn.Module):
    """A high-resolution conv of 8 filters (3 -> 8, 3x3, 16 x 16) read by a stride-2 conv of 8 filters
    (8 -> 8, 3x3, 8 x 8) read by a 1x1 conv (8 -> 4, 8 x 8); no biases, no BatchNorm."""

    imgsz = 16

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False)
        self.c = nn.Conv2d(8, 4, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_filter_flops_by_hand_and_against_the_flop_counter():
    model = _TwoRes().eval()
    costs = filter_flops(model, ["a", "b"])
    # a: its plane 16*16 * 3*9, plus the input channel of b it feeds: 8*8 * 8*9
    assert costs["a"] == 16 * 16 * 3 * 9 + 8 * 8 * 8 * 9 == 11520
    # b: its plane 8*8 * 8*9, plus c's input channel 8*8 * 4*1
    assert costs["b"] == 8 * 8 * 8 * 9 + 8 * 8 * 4 == 4864
    full = count_flops(model, 16)
    for name in ("a", "b"):  # removing one filter saves exactly that many multiply-adds (2 FLOPs each)
        pruned = copy.deepcopy(model)
        PruningGraph(pruned, 16).prune(name, [3])
        assert full - count_flops(pruned, 16) == 2 * costs[name]


def test_cost_weighted_penalty_and_proximal_step_by_hand():
    model = _TwoRes().eval()
    with torch.no_grad():
        model.a.weight.fill_(1.0)  # filter norms sqrt(27)
        model.b.weight.fill_(1.0)  # filter norms sqrt(72)
    weights = cost_weights(model, ["a", "b"], {"a": 3.0, "b": 1.0})
    assert weights == pytest.approx({"a": 1.5, "b": 0.5})  # mean over the 16 filters: (8*1.5 + 8*0.5) / 16 = 1
    plain = {n: sparsity_penalty(model, [n], "group").item() for n in ("a", "b")}
    assert plain == pytest.approx({"a": 8 * 27 ** 0.5, "b": 8 * 72 ** 0.5})
    weighted = sparsity_penalty(model, ["a", "b"], "group", weights=weights).item()
    assert weighted == pytest.approx(1.5 * plain["a"] + 0.5 * plain["b"], rel=1e-6)
    proximal_step(model, ["a", "b"], "group", 2.0, weights=weights)  # a's norms shrink by 3, b's by 1
    assert torch.allclose(filter_norms(model, ["a"])[0].detach(), torch.full((8,), 27 ** 0.5 - 3.0))
    assert torch.allclose(filter_norms(model, ["b"])[0].detach(), torch.full((8,), 72 ** 0.5 - 1.0))
    wrapped = SparsityModel(model, ["a", "b"], weight=0.1, fold_bn=False, kind="group", proximal=True,
                            costs={"a": 30.0, "b": 10.0})  # any unit: only the ratio counts
    assert wrapped.cost_weights == pytest.approx(weights)
    # cost_power: the costs' square roots, 2 and 1, are normalised alike: (8 * 4/3 + 8 * 2/3) / 16 = 1
    assert cost_weights(model, ["a", "b"], {"a": 4.0, "b": 1.0}, power=0.5) == pytest.approx({"a": 4 / 3, "b": 2 / 3})
    assert cost_weights(model, ["a", "b"], {"a": 4.0, "b": 1.0}, power=0.0) == pytest.approx({"a": 1.0, "b": 1.0})
    rooted = SparsityModel(model, ["a", "b"], weight=0.1, fold_bn=False, kind="group", proximal=True,
                           costs={"a": 40.0, "b": 10.0}, cost_power=0.5)
    assert rooted.cost_weights == pytest.approx({"a": 4 / 3, "b": 2 / 3})
    with pytest.raises(ValueError, match="power"):
        cost_weights(model, ["a", "b"], {"a": 4.0, "b": 1.0}, power=-1.0)
    with pytest.raises(KeyError, match="no cost"):
        cost_weights(model, ["a", "b"], {"a": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        cost_weights(model, ["a", "b"], {"a": 1.0, "b": 0.0})


def test_flops_weighted_group_prox_empties_the_costly_layer_first():
    """Two layers whose filters the loss does not defend: with one lambda both shrink alike; weighted
    by FLOPs, the high-resolution conv's filters empty while the cheap conv's keep most of their norm."""
    def run(costs):
        model = _TwoRes().eval()
        with torch.no_grad():
            model.a.weight.fill_(0.1)
            model.b.weight.fill_(0.1 * (27 / 72) ** 0.5)  # equal filter norms, 0.52
        wrapped = SparsityModel(model, ["a", "b"], weight=1.0, fold_bn=False, kind="group", proximal=True, costs=costs)
        for _ in range(4):
            wrapped.after_optimizer_step(0.1)
        return [filter_norms(model, [n])[0].detach() for n in ("a", "b")]

    a, b = run(None)
    assert torch.allclose(a, b, atol=1e-6) and float(a.min()) > 0
    a, b = run(filter_flops(_TwoRes(), ["a", "b"]))  # weights 11520 / 8192 = 1.41 and 4864 / 8192 = 0.59
    assert float(a.max()) == 0.0 and float(b.min()) > 0.25
