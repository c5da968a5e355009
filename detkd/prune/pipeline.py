"""The pruning pipeline behind ``tools/prune.py``: stages, their artefacts, and resuming.

Work dir ``W`` (every file written atomically; a stage whose artefact exists is skipped unless it
is asked for by name):

=========== ===================================================== ==============================
stage       does                                                  writes
=========== ===================================================== ==============================
sparsity    (singh) train with loss + a sparsity penalty (L1,     ``W/sparsity/`` run, ``W/sparse.pth``
            group or BN-scale) on the layer set
sweep       (singh) zero weights below each threshold, val mAP    ``W/sweep.json``, ``W/sweep.md``
            (or, with ``sweep.target_param_ratio`` / ``_flop_ratio``,
            bisect for the smallest threshold meeting that budget)
plan        choose filters (singh: zero fractions after the       ``W/plan.json`` (edit it before
            chosen threshold; l1/taylor: lowest ``ratio``, per    ``apply`` if you like);
            layer or, with ``latency_aware``, per ms saved        ``W/latency.json`` (the layer
            across layers); keep multiples of ``round_to``;       latency table, measured once)
            iterative: prune + fine-tune ``iterations - 1`` times ``W/iter_<i>/`` per extra step
            first)
apply       remove the plan's filters for real                    ``W/pruned.pth``
retrain     train the pruned model with the original loss (and    ``W/retrain/`` run, ``W/retrained.pth``
            ``retrain.distill``: distillation from the unpruned
            model, :mod:`detkd.prune.retrain`)
report      original vs pruned vs retrained: params, FLOPs, ONNX  ``W/report.{json,md,png}``,
            size, ONNX Runtime latency (same run, same threads),  ``W/onnx/*.onnx``
            mAP50 and AP
=========== ===================================================== ==============================

``W/pipeline.json`` records the source checkpoint and method, and for each finished stage the
``prune`` settings its artefact depends on; a work dir made from another source is refused, and a
finished stage whose settings changed is refused rather than reused (``--stage NAME`` redoes it). Training stages continue an interrupted run only with ``resume=True`` (``--resume``),
otherwise a half-finished run is an error rather than silently restarted. Under ``torchrun ...
--launcher pytorch`` every process joins the training stages (DDP); the other stages run on rank 0
while the others wait.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from mmengine.config import Config

from detkd.config import run_options
from detkd.data.sources import read_split
from detkd.engine.checkpoint import detector_from_checkpoint, load_checkpoint_file, load_detector, save_detector
from detkd.engine.evaluate import check_classes, evaluate_model
from detkd.engine.model import DetectorModel
from detkd.engine.run_state import describe_changes
from detkd.errors import ConfigError, RunStateError
from detkd.fileio import atomic_write_json, remove_temp_files
from detkd.options import options_dict
from detkd.prune.groups import PruningGraph, resolve_layer_set
from detkd.prune.importance import L1Importance, SinghImportance, TaylorImportance, singh_selection
from detkd.prune.latency import filter_flops, latency_slopes, measure_latency_table, plan_by_latency, round_removal
from detkd.prune.pruner import PruningPlan, apply_plan, make_plan, plan_by_ratio
from detkd.prune.sparsity import (SparsityModel, choose_threshold, effective_weights, resolve_threshold, threshold_sweep,
                                  zero_below)

__all__ = ["PipelineError", "PrunePipeline", "load_source"]


class PipelineError(RunStateError):
    """A stage cannot run: an unfinished run without resume, or a work dir of another run."""


def load_source(cfg: Config, path: str | Path, trust: bool = False) -> nn.Module:
    """The model to prune: a detkd checkpoint (rebuilt from its own spec), or a torchvision SSD
    state dict loaded into the config's model."""
    from detkd.models.ssd import load_torchvision_ssd

    checkpoint = load_checkpoint_file(path, trust=trust)
    if isinstance(checkpoint.get("meta"), dict) and "detkd" in checkpoint["meta"]:
        return detector_from_checkpoint(checkpoint, str(path))  # read once, not again by load_detector
    from detkd.engine.runner import build_detector

    train = read_split(dict(cfg.data), "train")
    model = build_detector(dict(cfg.model), train.class_names, int(cfg.imgsz), train)
    load_torchvision_ssd(model, path)
    return model


class PrunePipeline:
    """Runs the stages of :mod:`detkd.prune.pipeline` for one config, source checkpoint and work dir."""

    def __init__(self, cfg: Config, checkpoint: str | Path, work_dir: str | Path, trust: bool = False,
                 launcher: str = "none", resume: bool = False, command: str = "") -> None:
        self.cfg = cfg
        self.command = command
        run = run_options(cfg)
        self.opts, self.decode = run.prune, run.decode
        self.checkpoint = Path(checkpoint)
        self.work_dir = Path(work_dir)
        self.trust, self.launcher, self.resume = trust, launcher, resume
        self.imgsz = int(cfg.imgsz)
        self._check_work_dir()

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _check_work_dir(self) -> None:
        record = self.work_dir / "pipeline.json"
        mine = {"checkpoint": str(self.checkpoint.resolve()), "method": self.opts.method}
        if record.is_file():
            old = json.loads(record.read_text())
            if any(old.get(k) != v for k, v in mine.items()):
                raise PipelineError(f"{self.work_dir} holds a {old.get('method')} run from {old.get('checkpoint')}; "
                                 f"use another --work-dir for {mine['method']} from {mine['checkpoint']}")
            remove_temp_files(self.work_dir)
        elif self.work_dir.is_dir() and any(self.work_dir.iterdir()):
            raise PipelineError(f"{self.work_dir} is not empty and holds no pruning run; pass a new --work-dir")

    def _record(self) -> None:
        """Create the work dir and its record, once the source checkpoint has loaded and fits
        (a refused checkpoint leaves nothing behind)."""
        record = self.work_dir / "pipeline.json"
        if not record.is_file():
            model = self.source()
            try:
                self.layers(model)
            except ConfigError as exc:
                raise ConfigError(f"{self.checkpoint}: {exc}") from None
            atomic_write_json(record, {"checkpoint": str(self.checkpoint.resolve()), "method": self.opts.method})

    def path(self, name: str) -> Path:
        return self.work_dir / name

    def source(self) -> nn.Module:
        model = load_source(self.cfg, self.checkpoint, self.trust)
        check_classes(model, read_split(dict(self.cfg.data), "train"), str(self.checkpoint))
        if int(model.imgsz) != self.imgsz:
            raise ConfigError(f"{self.checkpoint}: model input size {model.imgsz}, config imgsz {self.imgsz}")
        return model

    def layers(self, model: nn.Module) -> list[str]:
        return resolve_layer_set(model, self.opts.layers)

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        index = read_split(dict(self.cfg.data), self.opts.eval_split)
        metrics, _ = evaluate_model(model, index, progress=False, decode_cfg=self.decode)
        return metrics

    def _train(self, name: str, model: nn.Module, epochs: int, lr: float | None, wrap: Any = None,
               pick: str | None = None) -> nn.Module:
        """Train ``model`` for ``epochs`` in ``W/<name>`` on the config's data and schedule; returns
        the model of the run's best (AP50) checkpoint, or by default its last epoch's when ``wrap``
        is given (a sparsity run's best epoch is usually its least sparse)."""
        from detkd.engine.runner import build_runner, run_stage

        work = self.path(name)
        cfg = copy.deepcopy(self.cfg)
        cfg.train.epochs = int(epochs)
        if lr is not None:
            cfg.optim_wrapper.optimizer.lr = float(lr)
        model_for_runner = (wrap or (lambda det: DetectorModel(det, self.decode)))(model)
        final = run_stage(cfg, work, lambda: build_runner(cfg, work, resume=self.resume, launcher=self.launcher,
                                                          make_model=lambda _: model_for_runner),
                          pick=pick or ("latest" if wrap is not None else "best"))
        return load_detector(final)

    # ---- stages --------------------------------------------------------------------------------
    def run(self, stages: Sequence[str] | None = None) -> dict[str, Any]:
        """Run ``stages`` (default: all of this method's, skipping finished ones); a stage named
        explicitly always runs. Returns the report when it ran."""
        wanted = list(stages or self.opts.stages)
        unknown = [s for s in wanted if s not in self.opts.stages]
        if unknown:
            raise ConfigError(f"stages {unknown} are not part of the {self.opts.method} pipeline {list(self.opts.stages)}")
        artefact = {"sparsity": "sparse.pth", "sweep": "sweep.json", "plan": "plan.json", "apply": "pruned.pth",
                    "retrain": "retrained.pth", "report": "report.json"}
        result: dict[str, Any] = {}
        distributed = self.launcher == "pytorch"
        if distributed:
            _init_distributed()
        if not distributed or torch.distributed.get_rank() == 0:
            self._record()
        if distributed:
            torch.distributed.barrier()
        for stage in self.opts.stages:
            if stage not in wanted:
                continue
            if stages is None and self.path(artefact[stage]).is_file():
                self._check_stage_settings(stage, artefact[stage])  # made with these settings, or refused
                continue
            main = not distributed or torch.distributed.get_rank() == 0
            if main:
                print(f"[prune] stage {stage}", flush=True)
            # Under torchrun every process trains; the other stages run once, on rank 0, the rest wait.
            trains = stage in ("sparsity", "retrain") or (stage == "plan" and self.opts.iterations > 1 and self.opts.method != "singh")
            if not distributed or trains or main:
                result = getattr(self, f"stage_{stage}")() or {}
            if main:
                self._record_stage_settings(stage)
            if distributed:
                torch.distributed.barrier()
        return result

    # the prune settings each stage's artefact depends on (its own and its inputs')
    _DEPENDS = {"sparsity": ("layers", "sparsity"), "sweep": ("sweep", "eval_split"),
                "plan": ("select", "ratio", "scope", "min_keep", "iterations", "finetune_epochs", "taylor_batches",
                         "round_to", "latency_aware"),
                "apply": (), "retrain": ("retrain_epochs", "retrain_lr", "retrain"), "report": ("eval_split",)}

    def _stage_settings(self, stage: str) -> dict[str, Any]:
        stages = self.opts.stages
        keys = [k for s in stages[: stages.index(stage) + 1] for k in self._DEPENDS[s]]
        if "sweep" in keys and (self.opts.sweep.target_param_ratio is not None or self.opts.sweep.target_flop_ratio is not None):
            keys += ["select", "min_keep", "round_to"]  # a budget's threshold is found through the selection
        if self.opts.method != "singh":
            keys = ["layers", *keys]
        everything = options_dict(self.opts)
        return {k: everything[k] for k in dict.fromkeys(keys)}

    def _record_stage_settings(self, stage: str) -> None:
        record = self.work_dir / "pipeline.json"
        data = json.loads(record.read_text())
        data.setdefault("stages", {})[stage] = self._stage_settings(stage)
        atomic_write_json(record, data)

    def _check_stage_settings(self, stage: str, artefact: str) -> None:
        """A finished stage is reused only when it was made with today's settings."""
        made = json.loads((self.work_dir / "pipeline.json").read_text()).get("stages", {}).get(stage)
        if made is None:
            return
        now = self._stage_settings(stage)
        defaults = options_dict(type(self.opts).from_dict(None))  # a record older than an option: made with its default
        made = _with_defaults(made, {k: defaults[k] for k in now})
        if made != now:
            changes = describe_changes({f"prune.{k}": v for k, v in made.items()},
                                       {f"prune.{k}": v for k, v in now.items()})
            raise PipelineError(f"{self.path(artefact)} was made with other settings ({changes}); pass a new --work-dir "
                                f"(or --stage {stage} to redo it here)")

    def _need(self, name: str, stage: str) -> Path:
        path = self.path(name)
        if not path.is_file():
            raise PipelineError(f"{path} missing: run the {stage} stage first")
        return path

    def stage_sparsity(self) -> None:
        model = self.source()
        layers, opts = self.layers(model), self.opts.sparsity
        costs = self._filter_costs(model, layers)
        trained = self._train("sparsity", model, opts.epochs, opts.lr,
                              wrap=lambda det: self.sparsity_model(det, layers, costs))
        save_detector(trained, self.path("sparse.pth"))

    def sparsity_model(self, detector: nn.Module, layers: list[str],
                       costs: dict[str, float] | None) -> SparsityModel:
        """``detector`` wrapped for the sparsity stage with ``prune.sparsity``'s settings."""
        opts = self.opts.sparsity
        return SparsityModel(detector, layers, opts.weight, opts.fold_bn, self.decode, kind=opts.kind,
                             growth=opts.growth, proximal=opts.proximal, costs=costs, cost_power=opts.cost_power)

    def _filter_costs(self, model: nn.Module, layers: list[str]) -> dict[str, float] | None:
        """Per conv, what one filter costs for ``prune.sparsity.cost`` (None: ``none``)."""
        cost = self.opts.sparsity.cost
        if cost == "none":
            return None
        if cost == "flops":
            return filter_flops(model, layers, self.imgsz)
        return latency_slopes(self._latency_table(model, layers), layers)  # traces a graph only if it measures

    def stage_sweep(self) -> None:
        from detkd.engine.results import markdown_table, write_markdown

        model = load_detector(self._need("sparse.pth", "sparsity"))
        layers, opts, fold = self.layers(model), self.opts.sweep, self.opts.sparsity.fold_bn
        thresholds = list(opts.thresholds)
        targets = {k: v for k, v in (("params", opts.target_param_ratio), ("flops", opts.target_flop_ratio)) if v is not None}
        budget: dict[str, float] = {}
        if opts.scope == "layer":  # every value is a quantile of each conv's own magnitudes
            if thresholds and not targets:
                raise ConfigError("prune.sweep.thresholds are magnitudes of the whole layer set; with prune.sweep.scope=layer "
                                  "give prune.sweep.quantiles (each conv's own fraction of weights to zero) instead")
            if targets:
                budget = self._budget_threshold(model, layers, None, targets)
                thresholds = [budget["threshold"]]
            else:
                thresholds = list(opts.quantiles)
        elif not thresholds or targets:
            with torch.no_grad():
                magnitudes = torch.cat([w.abs().flatten() for w in effective_weights(model, layers, fold)])
            sample = magnitudes[torch.randperm(len(magnitudes), generator=torch.Generator().manual_seed(0))[:1_000_000]]
            if targets:
                budget = self._budget_threshold(model, layers, sample, targets)
                thresholds = [budget["threshold"]]
            else:
                thresholds = [float(torch.quantile(sample, q)) for q in opts.quantiles]
        rows = threshold_sweep(model, layers, thresholds, self.evaluate, fold, opts.scope)
        if budget:
            chosen = rows[-1]
            chosen.update(param_ratio=budget["param_ratio"], flop_ratio=budget["flop_ratio"], quantile=budget["quantile"])
        else:
            chosen = choose_threshold(rows, opts.max_drop)
        atomic_write_json(self.path("sweep.json"), {"rows": rows, "chosen": chosen, "scope": opts.scope, "max_drop": opts.max_drop,
                                                    "target_param_ratio": opts.target_param_ratio,
                                                    "target_flop_ratio": opts.target_flop_ratio,
                                                    "split": self.opts.eval_split})
        table = [dict(row, threshold=f"{row['threshold']:.2e}", chosen=row is chosen) for row in rows]
        write_markdown(self.path("sweep.md"), markdown_table(table, ["threshold", "sparsity", "mAP50", "AP", "chosen"]))
        what = "per-layer quantile" if opts.scope == "layer" else "threshold"
        print(f"[prune] {what} {chosen['threshold']:.3g}: {chosen['sparsity']:.1%} zero weights, mAP50 {chosen['mAP50']:.3f}"
              + (f", {budget['param_ratio']:.2f}x fewer parameters, {budget['flop_ratio']:.2f}x fewer FLOPs" if budget else ""))

    def _budget_threshold(self, model: nn.Module, layers: list[str], sample: torch.Tensor | None, targets: dict[str, float],
                          steps: int = 16) -> dict[str, float]:
        """The smallest threshold (a quantile of ``sample``, the layer set's BN-folded |w|; with
        ``sweep.scope=layer`` the quantile itself, applied to each conv's own magnitudes, and ``sample`` is
        unused) whose Singh plan cuts the detector's parameters and / or FLOPs by at least
        ``targets["params"]`` / ``targets["flops"]``x: ``{"threshold", "quantile", "param_ratio", "flop_ratio"}``.
        Bisection over the quantile (a larger threshold zeroes a superset of weights, so marks a superset of
        filters). Raises ConfigError when even zeroing every weight of the layer set falls short (every conv
        keeps ``min_keep`` filters)."""
        per_layer = self.opts.sweep.scope == "layer"

        def at(quantile: float) -> float:
            assert per_layer or sample is not None
            return quantile if per_layer else float(torch.quantile(sample, quantile))

        def cut(threshold: float) -> dict[str, float]:
            plan = self._singh_plan(model, layers, threshold)
            return {"params": plan.params_before / max(1, plan.params_after),
                    "flops": plan.flops_before / max(1, plan.flops_after)}

        def meets(got: dict[str, float]) -> bool:
            return all(got[k] >= v for k, v in targets.items())

        top = 1.0 if per_layer else float(sample.max()) * 1.001 + 1e-12
        reach = cut(top)
        if not meets(reach):
            option = {"params": "target_param_ratio", "flops": "target_flop_ratio"}
            short = ", ".join(f"prune.sweep.{option[k]}={v:g} (at most {reach[k]:.2f}x)" for k, v in targets.items() if reach[k] < v)
            raise ConfigError(f"{short}: Singh's selection cannot cut this model that far (every conv keeps "
                              f"prune.min_keep={self.opts.min_keep} filters); lower the target or min_keep")
        lo, hi = 0.0, 1.0
        best = (top, 1.0, reach)
        for _ in range(steps):
            mid = (lo + hi) / 2
            threshold = at(mid)
            got = cut(threshold)
            if meets(got):
                hi, best = mid, (threshold, mid, got)
            else:
                lo = mid
        return {"threshold": best[0], "quantile": best[1], "param_ratio": best[2]["params"], "flop_ratio": best[2]["flops"]}

    def _singh_plan(self, model: nn.Module, layers: list[str], threshold: float) -> PruningPlan:
        """Singh's plan for ``model`` (the sparse one) at ``threshold`` (a per-layer quantile with
        ``sweep.scope=layer``): the filters its zero fractions mark after zeroing the layer set's BN-folded
        weights below it (rounded to ``round_to``)."""
        opts = self.opts
        thresholded = copy.deepcopy(model)
        fold = opts.sparsity.fold_bn
        zero_below(thresholded, layers, resolve_threshold(thresholded, layers, threshold, opts.sweep.scope, fold), fold)
        thresholded_graph = PruningGraph(thresholded)
        removed = singh_selection(thresholded_graph, layers, opts.select.out_fraction, opts.select.in_fraction,
                                  opts.select.combine, opts.min_keep)
        removed = self._rounded(removed, thresholded_graph, SinghImportance(), layers)
        return make_plan(model, removed, "singh", threshold=threshold, threshold_scope=opts.sweep.scope, round_to=opts.round_to,
                         **vars(opts.select))

    def _plan_once(self, model: nn.Module, ratio: float, name: str) -> PruningPlan:
        layers, opts = self.layers(model), self.opts
        if opts.method == "singh":
            threshold = json.loads(self._need("sweep.json", "sweep").read_text())["chosen"]["threshold"]
            return self._singh_plan(model, layers, threshold)
        scorer: Any
        graph = PruningGraph(model)
        if opts.method == "l1":
            scorer = L1Importance()
        else:
            scorer = TaylorImportance().collect(model, layers, self._taylor_batches(), _loss)
        if opts.latency_aware:
            removed = plan_by_latency(graph, layers, scorer, self._latency_table(model, layers, graph), ratio, opts.min_keep)
        else:
            removed = plan_by_ratio(graph, layers, scorer, ratio, opts.scope, opts.min_keep)
        removed = self._rounded(removed, graph, scorer, layers)
        return make_plan(model, removed, opts.method, ratio=opts.ratio, step_ratio=ratio, scope=opts.scope, step=name,
                         round_to=opts.round_to, latency_aware=opts.latency_aware)

    def _rounded(self, removed: dict[str, list[int]], graph: PruningGraph, scorer: Any, layers: list[str]) -> dict[str, list[int]]:
        if self.opts.round_to <= 1:
            return removed
        channels = {n: graph.conv(n).out_channels for n in layers}
        return round_removal(removed, channels, {n: scorer(graph, n) for n in removed}, self.opts.round_to)

    def _latency_table(self, model: nn.Module, layers: list[str], graph: PruningGraph | None = None) -> dict[str, Any]:
        """``W/latency.json``: measured once per work dir (the unpruned model's convs at this size and
        thread count), reused by later plans."""
        path = self.path("latency.json")
        if path.is_file():
            table = json.loads(path.read_text())
            if (table.get("imgsz"), table.get("threads"), table.get("multiple")) == (self.imgsz, self.opts.threads, self.opts.round_to) \
                    and all(n in table["layers"] for n in layers):
                return table
        print(f"[prune] measuring the layer latency table ({len(layers)} convs, {self.opts.threads} threads)", flush=True)
        table = measure_latency_table(model, layers, self.imgsz, self.opts.threads, self.opts.round_to, graph=graph)
        atomic_write_json(path, table)
        return table

    def _taylor_batches(self) -> list[Any]:
        from detkd.data.collate import build_dataloader
        from detkd.data.dataset import DetectionDataset
        from detkd.data.transforms import build_eval_transform
        from detkd.engine.model import DetDataPreprocessor

        index = read_split(dict(self.cfg.data), "train")
        loader = build_dataloader(DetectionDataset(index, build_eval_transform(self.imgsz)), int(self.cfg.train.batch_size), shuffle=True)
        prep, out = DetDataPreprocessor(), []
        for batch in loader:
            out.append(prep(batch))
            if len(out) >= self.opts.taylor_batches:
                break
        return out

    def _plan_source(self) -> nn.Module:
        if self.opts.method == "singh":
            return load_detector(self._need("sparse.pth", "sparsity"))
        steps = self.opts.iterations
        return load_detector(self.path(f"iter_{steps - 1}") / "finetuned.pth") if steps > 1 else self.source()

    def stage_plan(self) -> None:
        opts = self.opts
        if opts.method != "singh" and opts.iterations > 1:  # prune + fine-tune all steps but the last
            step_ratio = 1.0 - (1.0 - opts.ratio) ** (1.0 / opts.iterations)
            model = self.source()
            for step in range(1, opts.iterations):
                folder = self.path(f"iter_{step}")
                if not (folder / "finetuned.pth").is_file():
                    plan = self._plan_once(model, step_ratio, f"iter_{step}")
                    plan.save(folder / "plan.json")
                    model = apply_plan(model, plan)
                    model = self._train(f"iter_{step}/finetune", model, opts.finetune_epochs, opts.retrain_lr)
                    save_detector(model, folder / "finetuned.pth")
                model = load_detector(folder / "finetuned.pth")
            plan = self._plan_once(model, step_ratio, f"iter_{opts.iterations}")
        else:
            plan = self._plan_once(self._plan_source(), opts.ratio, "one-shot")
        plan.save(self.path("plan.json"))
        print(f"[prune] {plan.summary()}\n[prune] plan written to {self.path('plan.json')}")

    def stage_apply(self) -> None:
        plan = PruningPlan.load(self._need("plan.json", "plan"))
        pruned = apply_plan(self._plan_source(), plan)
        save_detector(pruned, self.path("pruned.pth"))

    def stage_retrain(self) -> None:
        model = load_detector(self._need("pruned.pth", "apply"))
        wrap = None
        if self.opts.retrain.distill:
            from detkd.prune.retrain import SSDDistillModel

            teacher = self.source()
            wrap = lambda det: SSDDistillModel(det, teacher, self.opts.retrain, self.decode)  # noqa: E731
        trained = self._train("retrain", model, self.opts.retrain_epochs, self.opts.retrain_lr, wrap=wrap, pick="best")
        save_detector(trained, self.path("retrained.pth"))

    def stage_report(self) -> dict[str, Any]:
        from detkd.prune.report import write_report

        models = {"original": self.source(), "pruned": load_detector(self._need("pruned.pth", "apply"))}
        if self.path("retrained.pth").is_file():
            models["retrained"] = load_detector(self.path("retrained.pth"))
        index = read_split(dict(self.cfg.data), self.opts.eval_split)
        return write_report(models, index, self.work_dir, self.opts, self.opts.threads, self.command, self.decode)


def _with_defaults(made: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``made`` (recorded stage settings) with each option it lacks, in nested sections too, taken from
    ``defaults``; keys ``made`` has are kept as they are."""
    out = {key: value for key, value in defaults.items() if key not in made}
    for key, value in made.items():
        nested = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        out[key] = _with_defaults(value, defaults[key]) if nested else value
    return out


def _init_distributed() -> None:
    """Join torchrun's process group before the first stage (mmengine's Runner reuses it)."""
    if torch.distributed.is_initialized():
        return
    if torch.cuda.is_available():
        from mmengine.dist import init_dist

        init_dist("pytorch", backend="nccl")
    else:
        from detkd.engine.runner import init_cpu_distributed

        init_cpu_distributed()


def _loss(detector: nn.Module, batch: tuple[torch.Tensor, list[dict[str, Any]]]) -> torch.Tensor:
    images, targets = batch
    return sum(detector.loss(detector(images), targets).values())  # type: ignore[return-value]
