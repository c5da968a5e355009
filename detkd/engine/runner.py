"""Wire a detkd config into mmengine's ``Runner``: datasets, model, metric, schedule, hooks.

mmengine does the loop, optimizer wrapper (AMP on GPU, gradient clipping), LR schedule,
checkpoints (latest + best), resume, logging (JSON scalars + TensorBoard) and distributed training.
detkd supplies the model, datasets, metric and hooks.
"""

from __future__ import annotations

import copy
import logging
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dist import get_rank
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner, set_random_seed
from torch.utils.data import Dataset

from detkd.config import ensure_generated, run_options
from detkd.data.sources import read_split
from detkd.data.check import summarize_splits
from detkd.data.collate import collate_detection
from detkd.data.dataset import DetectionDataset
from detkd.data.records import DatasetIndex
from detkd.data.transforms import build_eval_transform, build_train_transform
from detkd.data.writers import coco_dict
from detkd.engine.amp import CpuBf16OptimWrapper, cpu_bf16_supported
from detkd.engine.checkpoint import install_checkpoint_io
from detkd.engine.coco_metric import CocoDetMetric
from detkd.engine.console import console_level
from detkd.binary.hooks import LatentWeightClipHook
from detkd.engine.hooks import AfterStepHook, CheckpointMetaHook, EpochSeedHook, EpochSummaryHook
from detkd.engine.model import DetectorModel
from detkd.engine.run_state import RunState
from detkd.errors import ConfigError, RunStateError
from detkd.models.factory import build_model
from detkd.options import RunOptions, TrainOptions, options_dict

__all__ = ["DetkdRunner", "build_detector", "build_runner", "is_finished", "run_params", "run_stage", "dataloader_cfg", "init_cpu_distributed"]

YOLO_FAMILY = {"yolov2", "tiny_yolov2", "fyolo"}


def build_detector(model_cfg: dict[str, Any], class_names: list[str], imgsz: int, train_index: DatasetIndex | None) -> nn.Module:
    """Build the configured detector; ``anchors="kmeans"`` fits YOLO anchors on the training boxes."""
    kwargs = dict(model_cfg)
    name = kwargs.pop("name")
    num_anchors = int(kwargs.pop("num_anchors", 5))
    if kwargs.get("anchors") == "kmeans":
        if train_index is None:
            raise ConfigError("config key model.anchors = 'kmeans' needs the training split")
        from detkd.models.anchors import anchors_from_dataset

        try:
            kwargs["anchors"] = anchors_from_dataset(train_index, imgsz, num_anchors, seed=0)
        except ValueError as exc:  # a tiny dataset: fewer distinct box sizes than anchors
            warnings.warn(f"{train_index.source}: k-means anchors: {exc}; using the default anchors", stacklevel=2)
            kwargs["anchors"] = None
    return build_model(name, class_names=list(class_names), imgsz=imgsz, **kwargs)


def dataloader_cfg(dataset: DetectionDataset, batch_size: int, num_workers: int, shuffle: bool) -> dict[str, Any]:
    """mmengine dataloader config: its sampler shards the data under DDP, our collate batches it."""
    return dict(
        dataset=dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=False,  # workers re-fork each epoch and see the dataset's set_epoch
        sampler=dict(type="DefaultSampler", shuffle=shuffle),
        collate_fn=collate_detection,
    )


def _schedulers(cfg: Config, epochs: int) -> list[dict[str, Any]]:
    """The configured schedulers; an epoch-based one without ``end`` runs to the last epoch
    (configs leave ``end`` out so that overriding ``train.epochs`` keeps the schedule whole)."""
    out = []
    for sched in copy.deepcopy(list(cfg.get("param_scheduler", []))):
        if sched.get("by_epoch", True) and "end" not in sched:
            sched["end"] = epochs
            if "T_max" not in sched and getattr(sched["type"], "__name__", str(sched["type"])).endswith("CosineAnnealingLR"):
                sched["T_max"] = epochs - sched.get("begin", 0)
        out.append(sched)
    return out


def _optim_wrapper(cfg: Config, train: TrainOptions) -> dict[str, Any]:
    """Mixed precision: float16 AMP on a GPU (``train.amp``, on by default); bfloat16 autocast on a
    CPU with native bfloat16 when ``train.cpu_amp`` asks for it (see :mod:`detkd.engine.amp`)."""
    optim = copy.deepcopy(dict(cfg.optim_wrapper))
    if torch.cuda.is_available():
        if train.amp:
            optim.setdefault("type", "AmpOptimWrapper")
    elif train.cpu_amp:
        if cpu_bf16_supported():
            optim.setdefault("type", CpuBf16OptimWrapper)
        else:
            warnings.warn("train.cpu_amp=True, but this CPU has no native bfloat16: training in float32", stacklevel=2)
    return optim


def _hooks(opts: RunOptions, stage: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ckpt, train = opts.checkpoint, opts.train
    default_hooks = dict(
        checkpoint=dict(
            type="CheckpointHook",
            interval=ckpt.interval,
            max_keep_ckpts=ckpt.max_keep,
            save_best=ckpt.save_best,
            rule="greater",
            save_last=True,
        ),
        logger=dict(type="LoggerHook", interval=train.log_interval),
    )
    custom_hooks: list[dict[str, Any]] = [dict(type=CheckpointMetaHook), dict(type=EpochSeedHook),
                                         dict(type=EpochSummaryHook, stage=stage), dict(type=LatentWeightClipHook),
                                         dict(type=AfterStepHook)]
    if train.ema:
        custom_hooks.append(dict(type="EMAHook", momentum=train.ema_momentum, priority=49))
    return default_hooks, custom_hooks


def init_cpu_distributed() -> None:
    """Start a gloo process group from torchrun's environment when there is no GPU.

    mmengine's own initialisation selects a CUDA device per process, which fails on CPU-only
    machines; once a group exists, mmengine uses it as is.
    """
    if not torch.distributed.is_initialized() and not torch.cuda.is_available():
        torch.distributed.init_process_group(backend="gloo")


class DetkdRunner(Runner):
    """mmengine's ``Runner`` with a log of its own and a quiet console.

    mmengine names a run's logger, visualizer and message hub after the start time to the
    second and reuses an existing instance of that name, so two runs started in one second by one
    process (a FitNets hint stage and its distillation, a TAKD chain) would share the first run's
    log folder and scalars file. Each detkd run adds a random part to the name, so every stage
    gets its own instances and its own folder. The console handler of the logger shows warnings
    only, unless :func:`detkd.engine.console.set_verbose` asked for everything; the log file
    always holds everything (config, hook table, iteration lines).
    """

    def __init__(self, *args: Any, stage: str = "train", run_state: RunState | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("experiment_name", f"{stage.replace('/', '_')}_{uuid.uuid4().hex[:8]}")
        super().__init__(*args, **kwargs)
        self.run_state = run_state

    def train(self) -> nn.Module:
        """Train, then record the run as finished in its work dir (:mod:`detkd.engine.run_state`)."""
        model = super().train()
        if self.run_state is not None and self.rank == 0:
            self.run_state.finish()
        return model

    def build_logger(self, log_level: int | str = "INFO", log_file: str | None = None, **kwargs: Any) -> MMLogger:
        logger = super().build_logger(log_level, log_file, **kwargs)
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:  # the console, not the file handler (a subclass)
                handler.setLevel(max(handler.level, console_level()))
                if console_level() > logging.INFO:
                    handler.addFilter(_not_deprecation_notice)
        return logger


def _not_deprecation_notice(record: logging.LogRecord) -> bool:
    """Console filter: mmengine's notices about its own APIs ("... will be deprecated") say nothing
    to a detkd user; they stay in the log file."""
    return "deprecated" not in record.getMessage()


ModelFactory = Callable[[nn.Module], BaseModel]
TrainSetFactory = Callable[[DetectionDataset], Dataset[Any]]


def run_params(cfg: Config, opts: RunOptions, load_from: str | None) -> dict[str, Any]:
    """What a run's results depend on, recorded in its work dir: a change refuses to reuse it.
    Settings that only change speed or logging (workers, log interval, validation batch) are left out."""
    train = options_dict(opts.train)
    for key in ("num_workers", "log_interval", "val_batch_size"):
        train.pop(key)
    return {"data": options_dict(opts.data), "imgsz": opts.imgsz, "model": dict(cfg.model), "train": train,
            "optim_wrapper": dict(cfg.optim_wrapper), "param_scheduler": list(cfg.get("param_scheduler", [])),
            "decode": options_dict(opts.decode), "checkpoint": options_dict(opts.checkpoint),
            "teacher": options_dict(opts.teacher), "distill": options_dict(opts.distill),
            "unlabeled": options_dict(opts.unlabeled), "hints": options_dict(opts.hints), "load_from": load_from}


def is_finished(cfg: Config, work_dir: str | Path, load_from: str | None = None) -> bool:
    """Whether ``work_dir`` holds a finished run of ``cfg`` with these very settings."""
    return RunState(work_dir).finished(run_params(cfg, run_options(cfg), load_from))


def run_stage(cfg: Config, work_dir: str | Path, build: Callable[[], Any], load_from: str | None = None,
              pick: str = "best") -> Path:
    """One training stage of a pipeline (distillation's hint / assistant / student runs, pruning's
    sparsity / fine-tune / retrain runs): train it with ``build()`` (a Runner factory) unless
    ``work_dir`` holds a finished run of ``cfg`` with these very settings, then return its ``best``
    checkpoint (by recorded score, :meth:`RunState.best`) or its ``latest`` one.

    The Runner's own check (:mod:`detkd.engine.run_state`) refuses a folder of another run, or an
    unfinished one without ``resume``. Raises RunStateError when training left no checkpoint.
    """
    if pick not in ("best", "latest"):
        raise ValueError(f"pick must be 'best' or 'latest', not {pick!r}")
    if not is_finished(cfg, work_dir, load_from):
        build().train()
    state = RunState(work_dir)
    final = state.best() if pick == "best" else state.latest()
    if final is None:
        raise RunStateError(f"{work_dir}: training left no checkpoint")
    return final


def build_runner(
    cfg: Config,
    work_dir: str | Path,
    resume: bool = False,
    launcher: str = "none",
    make_model: ModelFactory | None = None,
    make_train_set: TrainSetFactory | None = None,
    load_from: str | None = None,
    stage: str | None = None,
) -> DetkdRunner:
    """A ready-to-train mmengine Runner for a detkd training config.

    The work dir is checked first (:meth:`detkd.engine.run_state.RunState.begin`: another run's
    folder is refused, an unfinished one needs ``resume``), then the seed is applied, before any
    dataset, anchor or model is built, so two identical runs give identical checkpoints.

    Args:
        cfg, work_dir, resume, launcher: as ``tools/train.py`` gives them.
        make_model: wraps the built detector into the mmengine model (default
            :class:`~detkd.engine.model.DetectorModel`); distillation passes its distiller here.
        make_train_set: wraps the training dataset (distillation mixes unlabeled images in).
        load_from: a checkpoint whose weights start the run (not its optimizer or epoch).
        stage: the name the console's epoch lines and the run's log names carry
            (default: the work dir's name).

    Raises:
        RunStateError: the work dir holds another run, or an unfinished one without ``resume``.
        ConfigError, DatasetError: bad settings or data.
    """
    install_checkpoint_io()
    if launcher == "pytorch":
        init_cpu_distributed()
    opts = run_options(cfg)
    stage = stage or Path(work_dir).resolve().name
    state, params = RunState(work_dir), run_params(cfg, opts, load_from)
    state.check(params, resume)  # refuse before building anything; nothing is written until all is built
    train, imgsz, seed = opts.train, opts.imgsz, opts.train.seed
    set_random_seed(seed)  # before anything random is built: datasets, k-means anchors, model weights
    data = dict(cfg.data)
    ensure_generated(data)
    train_index, val_index = read_split(data, "train"), read_split(data, "val")
    train_set: Dataset[Any] = DetectionDataset(train_index, build_train_transform(imgsz, train.augment, seed=seed), seed=seed)
    if make_train_set is not None:
        train_set = make_train_set(train_set)  # type: ignore[arg-type]
    val_set = DetectionDataset(val_index, build_eval_transform(imgsz))
    detector = build_detector(dict(cfg.model), train_index.class_names, imgsz, train_index)
    default_hooks, custom_hooks = _hooks(opts, stage)
    assert val_index.category_ids is not None
    cfg = copy.deepcopy(cfg)
    if not torch.cuda.is_available():  # CPU DDP: no device ids (mmengine would pass the local rank)
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                     find_unused_parameters=opts.find_unused_parameters)
    model = make_model(detector) if make_model is not None else DetectorModel(detector, opts.decode)
    # one process writes the work dir's record and cleans up after a crash; under DDP the others only check
    resume = state.begin(stage, params, resume) if get_rank() == 0 else state.check(params, resume)
    held_out = opts.data.holdout if opts.data is not None and "val" not in opts.data.splits else 0.0
    summary = summarize_splits({"train": train_index, "val": val_index}, held_out)
    runner = DetkdRunner(
        stage=stage,
        run_state=state,
        model=model,
        load_from=load_from,
        work_dir=str(work_dir),
        train_dataloader=dataloader_cfg(train_set, train.batch_size, train.num_workers, shuffle=True),
        val_dataloader=dataloader_cfg(val_set, train.val_batch_size or train.batch_size, train.num_workers, shuffle=False),
        val_evaluator=[CocoDetMetric(coco_dict(val_index, val_index.image_root), val_index.category_ids, out_dir=str(work_dir))],
        train_cfg=dict(by_epoch=True, max_epochs=train.epochs, val_interval=train.val_interval),
        val_cfg=dict(),
        optim_wrapper=_optim_wrapper(cfg, train),
        param_scheduler=_schedulers(cfg, train.epochs),
        default_hooks=default_hooks,
        custom_hooks=custom_hooks,
        visualizer=dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]),
        launcher=launcher,
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl" if torch.cuda.is_available() else "gloo")),
        randomness=dict(seed=seed),
        resume=resume,
        cfg=cfg,
        log_processor=dict(by_epoch=True),
    )
    if runner.rank == 0:  # the data's summary once at the start: on the console and in the run's log
        print("\n".join(summary), flush=True)
        for line in summary:
            runner.logger.info(line)
    return runner
