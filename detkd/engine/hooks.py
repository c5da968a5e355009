"""mmengine hooks detkd adds: self-describing, safely loadable checkpoints and a progress bar."""

from __future__ import annotations

from typing import Any

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import is_model_wrapper
from tqdm import tqdm

from detkd.engine.checkpoint import detector_meta
from detkd.models.binary import BinaryConv2d, clip_latent_weights_

__all__ = ["CheckpointMetaHook", "EpochSeedHook", "LatentWeightClipHook", "ProgressBarHook", "from_plain", "to_plain"]

_BUFFER = "__history_buffer__"


def _detector(runner: Any) -> Any:
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return model.detector


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


class ProgressBarHook(Hook):
    """A tqdm bar per training epoch with the running loss (rank 0; hidden when not a terminal)."""

    priority = "BELOW_NORMAL"

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def before_train_epoch(self, runner: Any) -> None:
        if runner.rank == 0:
            desc = f"epoch {runner.epoch + 1}/{runner.max_epochs}"
            self._bar = tqdm(total=len(runner.train_dataloader), desc=desc, leave=False, disable=None, dynamic_ncols=True)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if outputs and "loss" in outputs:
                self._bar.set_postfix(loss=f"{float(outputs['loss'].detach()):.3f}")

    def after_train_epoch(self, runner: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EpochSeedHook(Hook):
    """Tell the training dataset the epoch (and rank) before each epoch, so its augmentation is a
    function of ``(seed, epoch, rank, worker)`` and ``--resume`` continues exactly."""

    priority = "NORMAL"

    def before_train_epoch(self, runner: Any) -> None:
        dataset = runner.train_dataloader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(runner.epoch, runner.rank)


class LatentWeightClipHook(Hook):
    """BNN training: after every optimizer step, clip the latent weights of the detector's binary
    convs to [-1, 1] (outside it the straight-through gradient is zero). Does nothing for a model
    without binary layers."""

    priority = "LOW"

    def __init__(self) -> None:
        self._active = False

    def before_train(self, runner: Any) -> None:
        self._active = any(isinstance(m, BinaryConv2d) for m in _detector(runner).modules())

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self._active:
            clip_latent_weights_(_detector(runner))
