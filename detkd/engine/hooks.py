"""mmengine hooks detkd adds: self-describing, safely loadable checkpoints, the console's epoch lines,
per-epoch augmentation seeds, a model's own step after each optimizer step (BNN latent-weight clipping
lives with the binary layers: :class:`detkd.binary.hooks.LatentWeightClipHook`)."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import is_model_wrapper
from tqdm import tqdm

from detkd.engine.checkpoint import detector_meta

__all__ = ["AfterStepHook", "CheckpointMetaHook", "EpochSeedHook", "EpochSummaryHook", "from_plain", "to_plain"]

_BUFFER = "__history_buffer__"


def _training_model(runner: Any) -> Any:
    """The runner's model without its DDP wrapper."""
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def _detector(runner: Any) -> Any:
    return _training_model(runner).detector


def to_plain(obj: Any) -> Any:
    """Replace NumPy values and mmengine ``HistoryBuffer`` objects by plain Python types."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_BUFFER: True, "log": log.tolist(), "count": count.tolist(), "max_length": obj.max_length}
    if isinstance(obj, dict):
        return type(obj)((k, to_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain` for history buffers (NumPy scalars stay Python numbers)."""
    if isinstance(obj, dict) and obj.get(_BUFFER):
        return HistoryBuffer(obj["log"], obj["count"], obj["max_length"])
    if isinstance(obj, dict):
        return type(obj)((k, from_plain(v)) for k, v in obj.items())
    return obj


class CheckpointMetaHook(Hook):
    """Make every checkpoint self-describing and loadable with ``torch.load(weights_only=True)``.

    - ``meta["detkd"]`` holds the detector's builder spec, class names and input size, so
      :func:`detkd.engine.checkpoint.load_detector` rebuilds it without a config.
    - mmengine's message hub is stored as plain types: its ``HistoryBuffer`` objects pickle
      references to methods through ``getattr``, which a safe loader must refuse; they are
      rebuilt on load (``--resume``), before mmengine reads them.
    """

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint.setdefault("meta", {})["detkd"] = detector_meta(_detector(runner))
        for key in ("message_hub", "meta"):
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        if "message_hub" in checkpoint:
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])


def _loss_summary(sums: dict[str, float], count: int) -> str:
    """``loss 3.21 (obj 0.52 cls 0.81 ...)``: epoch means, the total first, ``loss_`` prefixes dropped."""
    if not count:
        return "no training steps"
    means = {k: v / count for k, v in sums.items()}
    parts = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in means.items() if k != "loss")
    total = f"loss {means['loss']:.3f}" if "loss" in means else ""
    return f"{total} ({parts})" if total and parts else total or parts


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}" if minutes < 60 else f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class EpochSummaryHook(Hook):
    """The console of a training run: a tqdm bar during each epoch (rank 0, only on a terminal)
    and one line per epoch, ``[stage] epoch 3/10  loss 3.210 (obj 0.520 ...)  val mAP50 0.412  1:05 elapsed, ETA 2:31``.

    The line of an epoch that validates waits for the validation and carries its mAP50; the loss
    values are means over the epoch. mmengine's own iteration lines go to the log file only
    (see :mod:`detkd.engine.console`).
    """

    priority = "BELOW_NORMAL"

    def __init__(self, stage: str = "train") -> None:
        self.stage = stage
        self._bar: tqdm | None = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._pending: str | None = None
        self._start = 0.0
        self._first_epoch = 0

    def before_train(self, runner: Any) -> None:
        self._start, self._first_epoch = time.perf_counter(), runner.epoch

    def before_train_epoch(self, runner: Any) -> None:
        self._flush(runner)  # the last epoch's line, when it did not validate
        self._sums, self._count = {}, 0
        if runner.rank == 0:
            desc = f"[{self.stage}] epoch {runner.epoch + 1}/{runner.max_epochs}"
            self._bar = tqdm(total=len(runner.train_dataloader), desc=desc, leave=False, disable=None, dynamic_ncols=True)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: dict[str, Any] | None = None) -> None:
        for key, value in (outputs or {}).items():
            if key.startswith("loss"):
                self._sums[key] = self._sums.get(key, 0.0) + float(value.detach() if hasattr(value, "detach") else value)
        self._count += 1
        if self._bar is not None:
            self._bar.update(1)
            if "loss" in self._sums:
                self._bar.set_postfix(loss=f"{self._sums['loss'] / self._count:.3f}")

    def after_train_epoch(self, runner: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if runner.rank == 0:
            # mmengine counts the epoch as done only after this hook: runner.epoch is still its index
            self._pending = f"[{self.stage}] epoch {runner.epoch + 1}/{runner.max_epochs}  {_loss_summary(self._sums, self._count)}"

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        if self._pending is not None and metrics:
            ap50 = next((v for k, v in metrics.items() if k.endswith("/AP50")), None)
            if ap50 is not None:
                self._pending += f"  val mAP50 {ap50:.3f}"
        self._flush(runner)

    def after_train(self, runner: Any) -> None:
        self._flush(runner)

    def _flush(self, runner: Any) -> None:
        """Print the pending epoch line with the stage's elapsed time and ETA."""
        if self._pending is None:
            return
        done = runner.epoch - self._first_epoch
        elapsed = time.perf_counter() - self._start
        left = elapsed / max(done, 1) * (runner.max_epochs - runner.epoch)
        line = f"{self._pending}  {_duration(elapsed)} elapsed, ETA {_duration(left)}"
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
        self._pending = None


class EpochSeedHook(Hook):
    """Tell the training dataset the epoch (and rank) before each epoch, so its augmentation is a
    function of ``(seed, epoch, rank, worker)`` and ``--resume`` continues exactly; and tell the model,
    when it has a ``set_epoch`` (a sparsity penalty that grows with the epochs)."""

    priority = "NORMAL"

    def before_train_epoch(self, runner: Any) -> None:
        dataset = runner.train_dataloader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(runner.epoch, runner.rank)
        model = _training_model(runner)
        if hasattr(model, "set_epoch"):
            model.set_epoch(runner.epoch)


class AfterStepHook(Hook):
    """After every optimizer step, call the training model's ``after_optimizer_step(lr)`` when it has
    one, with the first parameter group's current learning rate (a proximal sparsity step,
    :class:`detkd.prune.sparsity.SparsityModel`). Under DDP every process applies it to its identical
    parameters, so they stay identical."""

    priority = "LOW"

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        model = _training_model(runner)
        if hasattr(model, "after_optimizer_step"):
            lr = runner.optim_wrapper.get_lr()["lr"][0]
            model.after_optimizer_step(float(lr))
